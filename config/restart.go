package config

import (
	"fmt"
	"reflect"
)

// Change is a key whose value differs between the running configuration
// and the file, each value as Go prints it.
type Change struct{ Key, Running, File string }

// RestartOnly returns the keys, such as "admin.listen", whose value
// differs between running and next but which a reload does not apply:
// they take effect only after a restart. Empty when a reload applies all
// of next. Only top-level keys are restart-only (TestRestartOnlyKeys).
func RestartOnly(running, next *Config) []Change {
	var changed []Change
	for _, k := range keysIn("") {
		if !k.restart {
			continue
		}
		if a, b := k.value(running), k.value(next); !reflect.DeepEqual(a, b) && !sameListen(k.path, a, b) {
			changed = append(changed, Change{k.path, fmt.Sprint(a), fmt.Sprint(b)})
		}
	}
	return changed
}

// KeepRestartOnly sets next's restart-only keys to running's values: the
// configuration a reload applies, for every part that reads it whole (the
// TIME-WAIT watcher reads admin.listen, which a reload does not change).
func KeepRestartOnly(running, next *Config) {
	for _, k := range keysIn("") {
		if k.restart {
			k.set(next, k.value(running))
		}
	}
}

// sameListen says that a and b, values of key, are one listen address
// spelled two ways ("[::1]:9901" and "[0:0::1]:9901", "127.0.0.1:9901"
// and "[::ffff:127.0.0.1]:9901"): not a change.
func sameListen(key string, a, b any) bool {
	if key != "admin.listen" {
		return false
	}
	as, aok := a.(string)
	bs, bok := b.(string)
	if !aok || !bok {
		return false
	}
	sa, ok1 := ListenSpot(as)
	sb, ok2 := ListenSpot(bs)
	return ok1 && ok2 && sa == sb
}

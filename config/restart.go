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
		if a, b := k.value(running), k.value(next); !reflect.DeepEqual(a, b) {
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

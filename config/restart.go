package config

import "reflect"

// RestartOnly returns the paths of the keys, such as "admin.listen", whose
// value differs between running and next but which a reload does not apply:
// they take effect only after a restart. Empty when a reload applies all
// of next. Only top-level keys are restart-only (TestRestartOnlyKeys).
func RestartOnly(running, next *Config) []string {
	var changed []string
	for _, k := range keysIn("") {
		if k.restart && !reflect.DeepEqual(k.value(running), k.value(next)) {
			changed = append(changed, k.path)
		}
	}
	return changed
}

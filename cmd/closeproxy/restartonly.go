package main

import "github.com/closeproxy/closeproxy/config"

// restartOnly names the keys whose values differ between running and next
// that a reload cannot apply: the process read them once, at the start.
// Listener addresses, backends, policies, log.level, log.teardown,
// admin.kernel_sample_interval and auto.sample_interval all reload.
func restartOnly(running, next *config.Config) []string {
	var keys []string
	changed := func(key string, differ bool) {
		if differ {
			keys = append(keys, key)
		}
	}
	changed("shutdown_timeout", running.ShutdownTimeout != next.ShutdownTimeout)
	changed("log.records", running.Log.Records != next.Log.Records)
	changed("admin.listen", running.Admin.Listen != next.Admin.Listen)
	changed("auto.tw_budget", running.Auto.TWBudget != next.Auto.TWBudget)
	changed("auto.tw_resume", running.Auto.TWResume != next.Auto.TWResume)
	changed("auto.port_share", running.Auto.PortShare != next.Auto.PortShare)
	changed("auto.port_resume", running.Auto.PortResume != next.Auto.PortResume)
	return keys
}

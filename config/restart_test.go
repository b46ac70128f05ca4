package config

import (
	"slices"
	"strings"
	"testing"
)

func TestRestartOnly(t *testing.T) {
	old := mustParse(t, minimal)
	tests := []struct {
		name, src string
		want      []string
	}{
		{"nothing changed", minimal, nil},
		{"reloadable keys changed", "[log]\nlevel = \"debug\"\n" + strings.Replace(minimal, ":8080", ":9090", 1), nil},
		{"admin listener moved", "[admin]\nlisten = \"127.0.0.1:9902\"\n" + minimal, []string{"admin.listen"}},
		{"admin listener respelled", "[admin]\nlisten = \"[::ffff:127.0.0.1]:9901\"\n" + minimal, nil},
		{"two restart-only keys", "shutdown_timeout = \"5s\"\n[admin]\nlisten = \"off\"\n" + minimal,
			[]string{"shutdown_timeout", "admin.listen"}},
		{"relay changed", "relay = \"goroutines\"\n" + minimal, []string{"relay"}},
		{"every restart-only key", "shutdown_timeout = \"5s\"\nrelay = \"goroutines\"\n[log]\nrecords = \"stdout\"\nrecords_flush = \"250ms\"\n[admin]\nlisten = \"off\"\n" +
			"[auto]\ntw_budget = 100\ntw_resume = 0.5\nport_share = 0.6\nport_resume = 0.3\nsample_interval = \"1s\"\n" + minimal,
			[]string{"shutdown_timeout", "relay", "log.records", "log.records_flush", "admin.listen", "auto.tw_budget", "auto.tw_resume", "auto.port_share", "auto.port_resume"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range RestartOnly(old, mustParse(t, tt.src)) {
				got = append(got, c.Key)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("RestartOnly = %q, want %q", got, tt.want)
			}
		})
	}
}

// RestartOnly compares top-level keys only: a restart-only key of a
// listener or backend would need them matched by name first.
func TestRestartOnlyKeys(t *testing.T) {
	for _, k := range keys {
		if k.restart && k.scope() != "" {
			t.Errorf("%s is restart-only but not a top-level key", k.path)
		}
	}
}

// What a reload applies: the file, but the restart-only keys as they run
// (a watcher that read admin.listen = "off" from the file stopped caching
// kernel samples for the admin listener that still served).
func TestKeepRestartOnly(t *testing.T) {
	old := mustParse(t, minimal)
	next := mustParse(t, "shutdown_timeout = \"5s\"\n[log]\nlevel = \"debug\"\n[admin]\nlisten = \"off\"\n[auto]\ntw_budget = 100\n"+minimal)
	KeepRestartOnly(old, next)
	if changed := RestartOnly(old, next); len(changed) != 0 {
		t.Errorf("restart-only keys still differ: %v", changed)
	}
	if next.Admin.Listen != old.Admin.Listen || next.Log.Level != "debug" {
		t.Errorf("admin.listen %q, log.level %q; want the running %q and the file's debug", next.Admin.Listen, next.Log.Level, old.Admin.Listen)
	}
}

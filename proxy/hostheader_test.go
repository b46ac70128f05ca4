package proxy

import "testing"

// A health check's Host header leaves an IPv6 zone out; an address
// without one is sent as it is.
func TestHealthHostHeaderLeavesTheZoneOut(t *testing.T) {
	for addr, want := range map[string]string{
		"[::1%lo]:21028":     "[::1]:21028",
		"[fe80::1%eth0]:80":  "[fe80::1]:80",
		"127.0.0.1:8080":     "127.0.0.1:8080",
		"[::1]:80":           "[::1]:80",
		"backend.local:8080": "backend.local:8080",
	} {
		if got := hostHeader(addr); got != want {
			t.Errorf("hostHeader(%q) = %q, want %q", addr, got, want)
		}
	}
}

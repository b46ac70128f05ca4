package integration

import (
	"net/netip"
	"path/filepath"
	"testing"
)

// startHAProxy runs HAProxy in mode tcp in namespace ns, in the foreground
// (-db, one process), accepting on bind and forwarding every connection to
// server, with a PROXY header when sendProxy is "v1" or "v2" ("" for none).
// It has no health checks, so it opens no connection of its own. maxconn
// stays modest: HAProxy refuses to start when it cannot raise its FD limit
// to about 2×maxconn, and CI hosts may cap RLIMIT_NOFILE low.
func startHAProxy(t testing.TB, topo *Topology, ns, bind, server, sendProxy string) *Proc {
	t.Helper()
	bin := needTool(t, "haproxy")
	addr, err := netip.ParseAddrPort(bind)
	if err != nil {
		t.Fatalf("haproxy bind address: %v", err)
	}
	opt := map[string]string{"": "", "v1": " send-proxy", "v2": " send-proxy-v2"}[sendProxy]
	if opt == "" && sendProxy != "" {
		t.Fatalf("haproxy sendProxy %q: want \"\", v1 or v2", sendProxy)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	writeFile(t, cfg, []byte(`global
	maxconn 4096
defaults
	mode tcp
	timeout connect 2s
	timeout client 30s
	timeout server 30s
frontend fe
	bind `+bind+`
	default_backend be
backend be
	server s1 `+server+opt+`
`))
	p := topo.Start(t, ns, bin, "-db", "-f", cfg)
	waitListening(t, topo, ns, addr, p)
	return p
}

package integration

import (
	"testing"
	"time"
)

// TestHeadlineClientClosesFirst is the problem closeproxy exists for: a
// client (a load balancer) that closes first keeps TIME-WAIT on its own
// ports, so with 1000 ports toward one server it runs out after about 1000
// connections. Through closeproxy with front time_wait "nowhere" the same
// client, for the same time window, keeps no TIME-WAIT at all.
//
// Everything but the front target keeps its default. The back leg's
// target "backend" with fallback "reset", against nginx keep-alive: when
// the client has closed, the proxy withholds its FIN toward nginx, nginx
// (keep-alive) stays silent, and the grace ends the back leg with a safe
// reset — no TIME-WAIT on the proxy's own ports toward the backend, which
// would otherwise become the next bottleneck (about 28k ports, 60 s each).
//
// In tcp mode the proxy can end the front leg (its safe reset answering the
// client's FIN) only once the back leg has ended, so each client port sits
// in FIN-WAIT-2 for the back leg's grace. With adaptive_grace (default)
// that is 10 ms for nginx, which answers in well under a millisecond: at
// rate r that pins r × 10 ms ports, far below 1000.
func TestHeadlineClientClosesFirst(t *testing.T) {
	const (
		size   = 1000
		n      = 5000
		window = 30 * time.Second
		conc   = 64
		ports  = 1000 // 50000–50999
	)
	load := func(topo *Topology, web *Nginx, addr string) LoadResult {
		topo.Sysctl(t, topo.LB, "net.ipv4.ip_local_port_range", "50000 50999")
		topo.Sysctl(t, topo.LB, "net.ipv4.tcp_tw_reuse", "0")
		return runLoad(t, topo, topo.LB, LoadOpts{
			Addr: addr, N: n, C: conc, Path: web.BlobPath(size), Close: "client",
			ExpectBytes: size, SHA256: web.BlobSHA256(t, size), Timeout: 5 * time.Second, MaxDuration: window,
		})
	}

	topo := newTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{size}})
	direct := load(topo, web, web.Addr.String())
	lbTW := countTimeWait(t, topo, topo.LB, "dport = :80")
	t.Logf("direct: %d completed, %d EADDRNOTAVAIL, %d other connect errors, %d other errors; lb TIME-WAIT %d",
		direct.OK, direct.AddrNotAvail, direct.ConnectErrors-direct.AddrNotAvail, direct.OtherErrors, lbTW)
	if direct.AddrNotAvail == 0 || direct.OK > ports || direct.OK < ports*9/10 {
		t.Errorf("direct: %d completed and %d EADDRNOTAVAIL; want about %d completed, then EADDRNOTAVAIL",
			direct.OK, direct.AddrNotAvail, ports)
	}

	topo = newTopology(t)
	web = startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{size}})
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "web", Listen: addrPort(topo.ProxyFront, 8080), Backend: web.Addr.String(),
		Front: CloseOpts{TimeWait: "nowhere"},
	}))
	drops := softnetDrops(t)
	via := load(topo, web, addrPort(topo.ProxyFront, 8080))
	recs := cp.WaitRecords(t, via.Attempted, 15*time.Second)
	held, live := settleOrExplain(t, topo, recs, drops, mustAddrPort(t, addrPort(topo.ProxyFront, 8080)), web.Addr)
	t.Logf("through closeproxy: %d completed, %d connect errors, %d other errors in %d ms; TIME-WAIT on either leg: %d",
		via.OK, via.ConnectErrors, via.OtherErrors, via.ElapsedMS, len(held))

	if via.ConnectErrors != 0 || via.OtherErrors != 0 || via.OK != n {
		t.Errorf("through closeproxy: %d of %d completed, %d connect errors, %d other errors: %v",
			via.OK, n, via.ConnectErrors, via.OtherErrors, via.Errors)
	}
	if len(held) != 0 {
		t.Errorf("%d TIME-WAIT sockets through closeproxy, want none anywhere: %v", len(held), held)
	}
	requireAllRecordsOK(t, recs)
	requireAgreement(t, topo, recs, judgeClaims(held, live, recs), 0)
}

package integration

import (
	"net/netip"
	"testing"
	"time"
)

// These tests prove the harness against peers alone, with no closeproxy:
// the kernel counts they rely on must be right before a proxy is judged by
// them.

// TestHarnessDirectTimeWait checks that TIME-WAIT lands on whoever sends the
// first FIN, counted per namespace, on a direct lb → web path.
func TestHarnessDirectTimeWait(t *testing.T) {
	const n, size = 200, 1000
	cases := []struct {
		name       string
		path       string // prefix of the blob path
		connection string // request's Connection header
		close      string // load client's -close
		holder     string // "lb" or "web": who must hold the TIME-WAIT
	}{
		{"client closes first", "", "keep-alive", "client", "lb"},
		{"server closes first, Connection close from client", "", "close", "server", "web"},
		{"server closes first, nginx keepalive_timeout 0", "/close", "keep-alive", "server", "web"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topo := newTopology(t)
			web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80),
				NginxOpts{Keepalive: true, BlobSizes: []int{size}})
			r := runLoad(t, topo, topo.LB, LoadOpts{
				Addr: web.Addr.String(), N: n, C: 20, Path: tc.path + web.BlobPath(size),
				Connection: tc.connection, Close: tc.close,
				ExpectBytes: size, SHA256: web.BlobSHA256(t, size),
			})
			requireAllOK(t, r, n)
			checkAccessLog(t, web.WaitAccessLog(t, n, 5*time.Second), n)

			lb, mid, srv := settledTimeWait(t, topo, "dport = :80", "sport = :80")
			t.Logf("TIME-WAIT: lb %d, proxy %d, web %d", lb, mid, srv)
			want, other := lb, srv
			if tc.holder == "web" {
				want, other = srv, lb
			}
			between(t, tc.holder+" TIME-WAIT", want, n*95/100, n)
			between(t, "TIME-WAIT on the other end", other, 0, 0)
			between(t, "TIME-WAIT on the forwarding proxy namespace", mid, 0, 0)
			for _, ns := range []string{topo.LB, topo.Web} {
				if got, want := sockstatTW(t, topo, ns), countTimeWait(t, topo, ns, ""); got != want {
					t.Errorf("%s: /proc/net/sockstat tw %d, ss counts %d", ns, got, want)
				}
			}
		})
	}
}

// TestHarnessHAProxy checks the PROXY protocol path between two real peers:
// HAProxy in the proxy namespace sends a v1 or v2 header, nginx in web
// listens with proxy_protocol, and nginx's log names lb as the client.
func TestHarnessHAProxy(t *testing.T) {
	const n = 20
	for _, version := range []string{"v1", "v2"} {
		t.Run(version, func(t *testing.T) {
			topo := newTopology(t)
			web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80),
				NginxOpts{Keepalive: true, ProxyProtocol: true})
			front := addrPort(topo.ProxyFront, 8080)
			startHAProxy(t, topo, topo.Proxy, front, web.Addr.String(), version)
			requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: front, N: n, C: 5, ExpectBytes: 3}), n)

			for _, e := range web.WaitAccessLog(t, n, 5*time.Second) {
				if e.ProxyProtocolAddr != topo.LBAddr.String() || e.RemoteAddr != topo.ProxyBack.String() {
					t.Fatalf("access log: proxy_protocol_addr %q remote_addr %q, want %s via %s",
						e.ProxyProtocolAddr, e.RemoteAddr, topo.LBAddr, topo.ProxyBack)
				}
			}
			// An ordinary L4 proxy carries the closing order through: the
			// client closed first, so each leg's dialer holds one TIME-WAIT
			// per connection (DESIGN.md, "better than the peers").
			lb, _, srv := settledTimeWait(t, topo, "dport = :8080", "")
			var frontTW, backTW int
			for _, s := range timeWaitSockets(t, topo, topo.Proxy, "") {
				switch {
				case s.Local.Port() == 8080:
					frontTW++
				case s.Peer == web.Addr:
					backTW++
				}
			}
			t.Logf("TIME-WAIT through HAProxy: lb %d, proxy front %d, proxy back %d, web %d", lb, frontTW, backTW, srv)
			between(t, "lb TIME-WAIT (front leg, dialer)", lb, n, n)
			between(t, "proxy TIME-WAIT toward web (back leg, dialer)", backTW, n, n)
			between(t, "proxy TIME-WAIT toward lb", frontTW, 0, 0)
			between(t, "web TIME-WAIT", srv, 0, 0)
		})
	}
}

// settledTimeWait waits for lb, proxy and web to settle, then counts
// TIME-WAIT in lb matching lbFilter, in proxy (all), and in web matching
// webFilter.
func settledTimeWait(t testing.TB, topo *Topology, lbFilter, webFilter string) (lb, proxy, web int) {
	t.Helper()
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		waitTCPSettled(t, topo, ns, 5*time.Second)
	}
	return countTimeWait(t, topo, topo.LB, lbFilter),
		countTimeWait(t, topo, topo.Proxy, ""),
		countTimeWait(t, topo, topo.Web, webFilter)
}

// checkAccessLog expects n successful requests, one per connection.
func checkAccessLog(t testing.TB, entries []AccessEntry, n int) {
	t.Helper()
	conns := map[int64]bool{}
	for _, e := range entries {
		if e.Status != 200 || e.ConnectionRequests != 1 {
			t.Errorf("access log: %+v, want status 200 as the connection's only request", e)
		}
		conns[e.Connection] = true
	}
	if len(entries) != n || len(conns) != n {
		t.Errorf("access log: %d requests on %d connections, want %d on %d", len(entries), len(conns), n, n)
	}
}

func between(t testing.TB, what string, got, lo, hi int) {
	t.Helper()
	if got < lo || got > hi {
		if lo == hi {
			t.Errorf("%s: %d, want %d", what, got, lo)
			return
		}
		t.Errorf("%s: %d, want %d..%d", what, got, lo, hi)
	}
}

func addrPort(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}

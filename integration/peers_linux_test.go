package integration

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"
)

// Real peers nobody here wrote, on both sides of closeproxy: nginx as the
// web server (keep-alive, Connection: close, and behind `listen …
// proxy_protocol`), HAProxy as a load balancer sending PROXY v1 and v2.

// TestNginxKeepAliveAndClose relays nginx's keep-alive responses and its
// Connection: close responses, whole, and records who closed the back leg.
func TestNginxKeepAliveAndClose(t *testing.T) {
	const conns, size = 50, 100000
	topo := newTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{size}})
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "web", Listen: front, Backend: web.Addr.String(), Back: CloseOpts{PeerFinGrace: "300ms"},
	}))
	cases := []struct {
		name, path, close string
		backendFIN        bool // nginx sends a FIN on the back leg
	}{
		{"keep-alive responses, client closes", web.BlobPath(size), "client", false},
		{"Connection: close responses, nginx closes", "/close" + web.BlobPath(size), "server", true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runLoad(t, topo, topo.LB, LoadOpts{
				Addr: front, N: conns, C: 25, Path: tc.path, Close: tc.close,
				ExpectBytes: size, SHA256: web.BlobSHA256(t, size),
			})
			requireAllOK(t, r, conns)
			recs := cp.WaitRecords(t, (i+1)*conns, 10*time.Second)[i*conns:]
			for _, rec := range recs {
				fin := rec.Num("back.fin_in_ms") >= 0
				if rec.Str("outcome") != "ok" || fin != tc.backendFIN || rec.Num("back.bytes_in") < size {
					t.Errorf("record: outcome %q, back.fin_in_ms %v (want a backend FIN: %v), back.bytes_in %v",
						rec.Str("outcome"), rec.Num("back.fin_in_ms"), tc.backendFIN, rec.Num("back.bytes_in"))
				}
			}
		})
	}
}

// TestProxyProtocolPeers runs closeproxy between two PROXY protocol peers:
// HAProxy in lb sends v1 or v2 for a client on lb's 127.0.0.1, closeproxy
// (proxy_protocol "required", trusting lb) reads it, and sends v2 on to
// nginx (`listen … proxy_protocol`), whose access log must name the same
// real client. Without HAProxy, the client connects straight to closeproxy
// and nginx must name lb's address.
func TestProxyProtocolPeers(t *testing.T) {
	const conns = 20
	cases := []struct {
		name    string
		haproxy string // HAProxy's send-proxy version; "" for no HAProxy
	}{
		{"HAProxy send-proxy (v1)", "v1"},
		{"HAProxy send-proxy-v2", "v2"},
		{"client straight to closeproxy", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topo := newTopology(t)
			web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, ProxyProtocol: true})
			front := addrPort(topo.ProxyFront, 8080)
			l := ListenerOpts{
				Name: "web", Listen: front, Backend: web.Addr.String(), SendProxyProtocol: "v2",
				Back: CloseOpts{PeerFinGrace: "300ms"},
			}
			addr, client := front, topo.LBAddr
			if tc.haproxy != "" {
				l.ProxyProtocol, l.ProxyProtocolTrusted = "required", []string{topo.LBAddr.String()}
				addr, client = "127.0.0.1:8443", netip.MustParseAddr("127.0.0.1")
				startHAProxy(t, topo, topo.LB, addr, front, tc.haproxy)
			}
			cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(l))
			requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: addr, N: conns, C: 5, ExpectBytes: 3}), conns)

			var recPorts, logPorts []string
			for _, rec := range cp.WaitRecords(t, conns, 10*time.Second) {
				recPorts = append(recPorts, checkClient(t, rec, client, topo.LBAddr, tc.haproxy))
			}
			for _, e := range web.WaitAccessLog(t, conns, 5*time.Second) {
				if e.ProxyProtocolAddr != client.String() || e.RemoteAddr != topo.ProxyBack.String() {
					t.Errorf("nginx access log: proxy_protocol_addr %q remote_addr %q, want %s via %s",
						e.ProxyProtocolAddr, e.RemoteAddr, client, topo.ProxyBack)
				}
				logPorts = append(logPorts, e.ProxyProtocolPort)
			}
			slices.Sort(recPorts)
			slices.Sort(logPorts)
			if !slices.Equal(recPorts, logPorts) {
				t.Errorf("client ports: records %v, nginx's $proxy_protocol_port %v", recPorts, logPorts)
			}
		})
	}
}

// checkClient checks a record's client, lb and proxy_protocol keys and
// returns the client's port.
func checkClient(t testing.TB, rec Record, client, lb netip.Addr, version string) string {
	t.Helper()
	c, err := netip.ParseAddrPort(rec.Str("client"))
	if err != nil || c.Addr() != client || c.Port() == 0 || rec.Str("outcome") != "ok" {
		t.Errorf("record client %q outcome %q, want %s:<port> and ok", rec.Str("client"), rec.Str("outcome"), client)
	}
	wantPP, wantLB := version, rec.Str("front.peer")
	if version == "" {
		wantPP, wantLB = "none", ""
	}
	if rec.Str("proxy_protocol") != wantPP || rec.Str("lb") != wantLB {
		t.Errorf("record proxy_protocol %q lb %q, want %q %q", rec.Str("proxy_protocol"), rec.Str("lb"), wantPP, wantLB)
	}
	if p, err := netip.ParseAddrPort(rec.Str("front.peer")); err != nil || p.Addr() != lb {
		t.Errorf("record front.peer %q, want %s:<port>", rec.Str("front.peer"), lb)
	}
	return strconv.Itoa(int(c.Port()))
}

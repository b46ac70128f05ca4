package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// Transparent mode across namespaces: source = "client" makes an
// unmodified nginx log the real client, intercept = "tproxy" | "redirect"
// takes connections addressed to web's own ip:port, and back-leg TIME-WAIT
// then pins client addresses' ports rather than the proxy's.

// transparentTopology is a counting topology whose proxy namespace has the
// policy routing transparent mode needs, set up by `closeproxy transparent
// setup` itself.
func transparentTopology(t testing.TB) *Topology {
	t.Helper()
	needRoot(t)
	needTool(t, "nft")
	topo := newCountingTopology(t)
	out := topo.Exec(t, topo.Proxy, buildBinary(t, "./cmd/closeproxy"), "transparent", "setup")
	if !strings.Contains(out, "socket transparent 1 meta mark set 0x1") {
		t.Fatalf("transparent setup printed:\n%s", out)
	}
	return topo
}

// nftRules loads an nftables ruleset into namespace ns.
func nftRules(t testing.TB, topo *Topology, ns, rules string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.nft")
	writeFile(t, path, []byte(rules))
	topo.Exec(t, ns, "nft", "-f", path)
}

// remoteAddrs counts nginx's access log entries by $remote_addr.
func remoteAddrs(entries []AccessEntry) map[string]int {
	out := map[string]int{}
	for _, e := range entries {
		out[e.RemoteAddr]++
	}
	return out
}

// TestTransparentSourceClient: nginx, unmodified (no proxy_protocol),
// logs lb's address as $remote_addr for connections through closeproxy
// with source = "client" — the socket peer's, and the one a PROXY v2
// header named (written by a Go client, and by HAProxy in lb with
// send-proxy-v2). The back leg's close policy still holds: with time_wait
// "proxy" and a client that half-closes, every back leg leaves its
// TIME-WAIT on the proxy — now under lb's address — and the records say so.
func TestTransparentSourceClient(t *testing.T) {
	const n = 50
	topo := transparentTopology(t)
	headerClient := netip.MustParseAddrPort("10.231.1.77:40000") // an address that lives in lb
	runIP(t, "-n", topo.LB, "addr", "add", headerClient.Addr().String()+"/24", "dev", "lb0")
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{1000}})
	plain, pp := addrPort(topo.ProxyFront, 8080), addrPort(topo.ProxyFront, 8081)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(
		ListenerOpts{Name: "plain", Listen: plain, Backend: web.Addr.String(), Source: "client",
			Back: CloseOpts{TimeWait: "proxy"}},
		ListenerOpts{Name: "pp", Listen: pp, Backend: web.Addr.String(), Source: "client",
			ProxyProtocol: "required", ProxyProtocolTrusted: []string{"10.231.1.0/24"}},
	))

	r := runLoad(t, topo, topo.LB, LoadOpts{Addr: plain, N: n, C: 10, Path: web.BlobPath(1000), Close: "halfclose",
		ExpectBytes: 1000, SHA256: web.BlobSHA256(t, 1000)})
	requireAllOK(t, r, n)
	logged := remoteAddrs(web.WaitAccessLog(t, n, 5*time.Second))
	if logged[topo.LBAddr.String()] != n || len(logged) != 1 {
		t.Errorf("nginx $remote_addr: %v, want %s ×%d", logged, topo.LBAddr, n)
	}
	recs := cp.WaitRecords(t, n, 10*time.Second)
	tw := legTimeWait(t, topo)
	t.Logf("source = client, back time_wait proxy, client half-closes: TIME-WAIT %s", tw)
	if want := (twCounts{LB: n, ProxyBack: n}); tw != want {
		t.Errorf("TIME-WAIT %s, want %s", tw, want)
	}
	requireAllRecordsOK(t, recs)
	// The proxy's FIN goes first and nginx answers before its own: the
	// kernel cannot always tell that nginx's FIN did not cross it, so some
	// records say unknown; every claim still matches the sockets.
	requireClaimsAgree(t, topo, recs, n)
	for _, s := range timeWaitSockets(t, topo, topo.Proxy, "dport = :80") {
		if s.Local.Addr() != topo.LBAddr || s.Peer != web.Addr {
			t.Errorf("proxy's back-leg TIME-WAIT %s → %s, want from lb's %s", s.Local, s.Peer, topo.LBAddr)
		}
	}
	for _, rec := range recs {
		if local, _ := netip.ParseAddrPort(rec.Str("back.local")); local.Addr() != topo.LBAddr || rec.Str("back.pooled") == "true" {
			t.Fatalf("record back.local %q pooled %v, want a fresh dial from %s", rec.Str("back.local"), rec["back.pooled"], topo.LBAddr)
		}
	}

	// PROXY v2 from lb's main address, naming another of lb's addresses:
	// nginx logs the header's address, not the socket's.
	for i := range 3 {
		if got := proxiedGet(t, topo, pp, headerClient, web.Addr); !strings.HasPrefix(got, "HTTP/1.1 200") || !strings.HasSuffix(got, "ok\n") {
			t.Fatalf("request %d through the PROXY v2 listener: %q", i, got)
		}
	}
	entries := web.WaitAccessLog(t, n+3, 5*time.Second)
	if logged := remoteAddrs(entries[n:]); logged[headerClient.Addr().String()] != 3 || len(logged) != 1 {
		t.Errorf("nginx $remote_addr behind a PROXY v2 header: %v, want %s ×3", logged, headerClient.Addr())
	}
	recs = cp.WaitRecords(t, n+3, 10*time.Second)
	for _, rec := range recs[n:] {
		local, _ := netip.ParseAddrPort(rec.Str("back.local"))
		if rec.Str("client") != headerClient.String() || rec.Str("proxy_protocol") != "v2" || local.Addr() != headerClient.Addr() ||
			!strings.HasPrefix(rec.Str("lb"), topo.LBAddr.String()+":") {
			t.Errorf("record client %q lb %q proxy_protocol %q back.local %q; want %s via %s, dialed from %s",
				rec.Str("client"), rec.Str("lb"), rec.Str("proxy_protocol"), rec.Str("back.local"), headerClient, topo.LBAddr, headerClient.Addr())
		}
	}

	// The same through a real peer: HAProxy in lb, on the header client's
	// address, sends PROXY v2 over its own connection from lb's main one.
	const viaHAProxy = 10
	hap := netip.AddrPortFrom(headerClient.Addr(), 9000)
	startHAProxy(t, topo, topo.LB, hap.String(), pp, "v2")
	requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: hap.String(), Src: headerClient.Addr().String(),
		N: viaHAProxy, C: 2, ExpectBytes: 3}), viaHAProxy)
	entries = web.WaitAccessLog(t, n+3+viaHAProxy, 5*time.Second)
	if logged := remoteAddrs(entries[n+3:]); logged[headerClient.Addr().String()] != viaHAProxy || len(logged) != 1 {
		t.Errorf("nginx $remote_addr behind HAProxy's PROXY v2: %v, want %s ×%d", logged, headerClient.Addr(), viaHAProxy)
	}
	for _, rec := range cp.WaitRecords(t, n+3+viaHAProxy, 10*time.Second)[n+3:] {
		if !strings.HasPrefix(rec.Str("client"), headerClient.Addr().String()+":") || !strings.HasPrefix(rec.Str("lb"), topo.LBAddr.String()+":") {
			t.Errorf("record client %q lb %q, want %s via %s", rec.Str("client"), rec.Str("lb"), headerClient.Addr(), topo.LBAddr)
		}
	}

	// teardown removes what setup added; the namespace's own cleanup would
	// too, but an operator's host has no such cleanup.
	topo.Exec(t, topo.Proxy, buildBinary(t, "./cmd/closeproxy"), "transparent", "teardown")
	if rules := topo.Exec(t, topo.Proxy, "ip", "rule"); strings.Contains(rules, "fwmark") {
		t.Errorf("after teardown, ip rule still shows:\n%s", rules)
	}
	if tables := topo.Exec(t, topo.Proxy, "nft", "list", "tables"); strings.Contains(tables, "closeproxy") {
		t.Errorf("after teardown, nft still lists:\n%s", tables)
	}
}

// proxiedGet connects from lb to addr, sends a PROXY v2 header naming
// client, one GET, and returns the whole response.
func proxiedGet(t testing.TB, topo *Topology, addr string, client, dst netip.AddrPort) string {
	t.Helper()
	c, err := dialFrom(t, topo.LB, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	hdr := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(dst))
	if _, err := hdr.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read response: %v (got %q)", err, got)
	}
	return string(got)
}

// interceptRules are the README's rules, for web's address and port 80
// steered to closeproxy on port 8080.
func interceptRules(mode string, web netip.AddrPort) string {
	if mode == "tproxy" {
		return fmt.Sprintf(`table inet closeproxy_intercept {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		ip daddr %s tcp dport %d tproxy ip to :8080 meta mark set 0x1 accept
	}
}
`, web.Addr(), web.Port())
	}
	return fmt.Sprintf(`table ip closeproxy_intercept {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport %d redirect to :8080
	}
}
`, web.Addr(), web.Port())
}

// TestTransparentIntercept: a client in lb connects to web's own ip:80;
// the proxy namespace's nftables rules steer the connection into
// closeproxy, the response arrives intact, and the record names web:80 as
// the original destination. nginx's log shows who dialed it: the proxy
// (source = "proxy"), or lb itself with source = "client" — the load
// balancer and the web server both see each other's own addresses.
func TestTransparentIntercept(t *testing.T) {
	const n, size = 40, 20000
	for _, tc := range []struct{ mode, source, listen string }{
		{"tproxy", "", ""}, {"redirect", "", ""}, {"tproxy", "client", ""},
		{"redirect", "", "[::]:8080"}, // IPv4 on a dual-stack socket
	} {
		name := tc.mode
		if tc.source != "" {
			name += ", source " + tc.source
		}
		if tc.listen != "" {
			name += ", listen " + tc.listen
		}
		t.Run(name, func(t *testing.T) {
			var topo *Topology
			if tc.mode == "redirect" && tc.source == "" {
				needRoot(t)
				needTool(t, "nft")
				topo = newCountingTopology(t) // redirect needs no policy routing
			} else {
				topo = transparentTopology(t)
			}
			web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{size}})
			nftRules(t, topo, topo.Proxy, interceptRules(tc.mode, web.Addr))
			listen := addrPort(topo.ProxyFront, 8080)
			if tc.listen != "" {
				listen = tc.listen
			}
			cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
				Name: "web", Listen: listen, Backend: web.Addr.String(),
				Intercept: tc.mode, Source: tc.source,
			}))

			requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: web.Addr.String(), N: n, C: 8,
				Path: web.BlobPath(size), ExpectBytes: size, SHA256: web.BlobSHA256(t, size)}), n)
			recs := cp.WaitRecords(t, n, 10*time.Second)
			if got := countBy(recs, "outcome", "front.original_dst"); got["ok/"+web.Addr.String()] != n || len(recs) != n {
				t.Errorf("records by outcome/front.original_dst: %s; want ok/%s ×%d", fmtCounts(got), web.Addr, n)
			}
			who := topo.ProxyBack
			if tc.source == "client" {
				who = topo.LBAddr
			}
			if logged := remoteAddrs(web.WaitAccessLog(t, n, 5*time.Second)); logged[who.String()] != n || len(logged) != 1 {
				t.Errorf("nginx $remote_addr: %v, want %s ×%d", logged, who, n)
			}
		})
	}
}

// TestTransparentBackLegPortsPerClient is the port-exhaustion case of the
// core issue (TestAutoSparesBackendPorts, "back proxy"): the proxy
// namespace has 200 ephemeral ports (40000–40199), the back leg's
// time_wait is "proxy", and each client half-closes after its request, so
// each back leg leaves a TIME-WAIT on the proxy toward nginx's one ip:port.
// 600 connections come from four lb addresses, 150 each.
//
// source = "proxy": every back leg is (proxy address, port) → web:80, and
// the TIME-WAITs pin the proxy's own 200 ports; past them connect() fails
// with EADDRNOTAVAIL: records say ports_exhausted.
//
// source = "client": a TIME-WAIT pins the 4-tuple (client address, port,
// web, 80). The port is chosen at connect for that 4-tuple
// (IP_BIND_ADDRESS_NO_PORT), so each client address has the 200 ports to
// itself, and the proxy's own address pins none: 150 per address fit, and
// all 600 pass, each leaving its TIME-WAIT, as the records claim. One
// client address (an lb without PROXY headers) still runs out at 200, the
// third case: the limit moves from the proxy to each client address, it
// does not vanish.
func TestTransparentBackLegPortsPerClient(t *testing.T) {
	const ports = 200
	four := []string{"10.231.1.11", "10.231.1.12", "10.231.1.13", "10.231.1.14"}
	for _, tc := range []struct {
		name, source string
		srcs         []string
		perSrc       int
	}{
		{"source proxy", "proxy", four, 150},
		{"source client", "client", four, 150},
		{"source client, one client address", "client", four[:1], 300},
	} {
		source, srcs, perSrc := tc.source, tc.srcs, tc.perSrc
		n := perSrc * len(srcs)
		t.Run(tc.name, func(t *testing.T) {
			var topo *Topology
			if source == "client" {
				topo = transparentTopology(t)
			} else {
				topo = newCountingTopology(t)
			}
			topo.Sysctl(t, topo.Proxy, "net.ipv4.ip_local_port_range", fmt.Sprintf("40000 %d", 40000+ports-1))
			for _, a := range srcs {
				runIP(t, "-n", topo.LB, "addr", "add", a+"/24", "dev", "lb0")
			}
			web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{1000}})
			front := addrPort(topo.ProxyFront, 8080)
			cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
				Name: "web", Listen: front, Backend: web.Addr.String(), Source: source,
				Back: CloseOpts{TimeWait: "proxy"},
			}))
			results := make([]LoadResult, len(srcs))
			var wg sync.WaitGroup
			for i, src := range srcs {
				lr := startLoad(t, topo, topo.LB, LoadOpts{Addr: front, Src: src, N: perSrc, C: 5, Path: web.BlobPath(1000),
					Close: "halfclose", ExpectBytes: 1000, SHA256: web.BlobSHA256(t, 1000), MaxDuration: 30 * time.Second})
				wg.Go(func() { results[i] = lr.Wait(t) })
			}
			wg.Wait()
			ok, attempted := 0, 0
			for _, r := range results {
				ok, attempted = ok+r.OK, attempted+r.Attempted
			}
			if attempted != n {
				t.Fatalf("load: attempted %d of %d", attempted, n)
			}
			recs := cp.WaitRecords(t, n, 20*time.Second)
			outcomes := countBy(recs, "outcome")
			waitTCPSettled(t, topo, topo.Proxy, 10*time.Second)
			bySrc := map[netip.Addr]int{}
			for _, s := range timeWaitSockets(t, topo, topo.Proxy, "dport = :80") {
				bySrc[s.Local.Addr()]++
			}
			t.Logf("source %s: %d of %d ok; records %s; proxy's back-leg TIME-WAIT by local address %v",
				source, ok, n, fmtCounts(outcomes), bySrc)

			switch {
			case source == "proxy":
				if outcomes["ports_exhausted"] == 0 || ok == n {
					t.Errorf("source = proxy: %d of %d ok, %v ports_exhausted; want the proxy's %d ports to run out",
						ok, n, outcomes["ports_exhausted"], ports)
				}
				between(t, "TIME-WAIT from the proxy's own address", bySrc[topo.ProxyBack], ports*9/10, ports)
				return
			case perSrc > ports:
				if outcomes["ports_exhausted"] == 0 || bySrc[topo.ProxyBack] != 0 {
					t.Errorf("one client address: %v ports_exhausted, %d TIME-WAIT from the proxy's address; want that client's %d ports to run out, and none of the proxy's",
						outcomes["ports_exhausted"], bySrc[topo.ProxyBack], ports)
				}
				between(t, "TIME-WAIT from the one client address", bySrc[netip.MustParseAddr(srcs[0])], ports*9/10, ports)
				return
			}
			if ok != n || outcomes["ok"] != float64(n) {
				t.Fatalf("source = client: %d of %d ok, records %s; want all", ok, n, fmtCounts(outcomes))
			}
			if claims := countBy(recs, "back.time_wait"); claims["proxy"]+claims["unknown"] != float64(n) {
				t.Errorf("back.time_wait %s, want proxy (or unknown: FINs that may have crossed) ×%d", fmtCounts(claims), n)
			}
			requireClaimsAgree(t, topo, recs, n)
			if bySrc[topo.ProxyBack] != 0 {
				t.Errorf("%d TIME-WAIT from the proxy's own address, want none", bySrc[topo.ProxyBack])
			}
			for _, a := range srcs {
				between(t, "back-leg TIME-WAIT from "+a, bySrc[netip.MustParseAddr(a)], perSrc, perSrc)
			}
		})
	}
}

// TestTransparentNeedsNetAdmin: without CAP_NET_ADMIN (dropped with
// setpriv), `run` refuses a configuration that needs IP_TRANSPARENT and
// says which keys need it; `check` only warns and exits 0.
func TestTransparentNeedsNetAdmin(t *testing.T) {
	needRoot(t)
	setpriv := needTool(t, "setpriv")
	ns := "cpt" + randomHex(t, 3) + "-cap"
	addNetns(t, ns)
	topo := &Topology{}
	bin := buildBinary(t, "./cmd/closeproxy")
	cfg := filepath.Join(t.TempDir(), "closeproxy.toml")
	writeCloseproxyConfig(t, cfg, closeproxyConfigWith(GlobalOpts{AdminListen: "off"}, ListenerOpts{
		Name: "web", Listen: "127.0.0.1:8080", Backend: "127.0.0.1:80", Intercept: "tproxy", Source: "client",
	}))
	want := []string{
		`listener "web": intercept = "tproxy" needs CAP_NET_ADMIN (IP_TRANSPARENT); run as root or grant the capability`,
		`backend "web": source = "client" needs CAP_NET_ADMIN (IP_TRANSPARENT); run as root or grant the capability`,
	}
	drop := []string{setpriv, "--inh-caps=-net_admin", "--bounding-set=-net_admin"}
	for _, sub := range []string{"run", "check"} {
		out, err := topo.cmdContext(t.Context(), ns, append(drop, bin, sub, "-config", cfg)...).CombinedOutput()
		var ee *exec.ExitError
		switch {
		case sub == "run" && !(errors.As(err, &ee) && ee.ExitCode() == 1):
			t.Errorf("run without CAP_NET_ADMIN: %v, want exit 1\n%s", err, out)
		case sub == "check" && err != nil:
			t.Errorf("check without CAP_NET_ADMIN: %v, want exit 0 with a warning\n%s", err, out)
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s without CAP_NET_ADMIN printed:\n%s\nwant a line with: %s", sub, out, w)
			}
		}
	}
}

package integration

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Several web servers behind one closeproxy: three nginx listening on three
// ports in the web namespace, one backend with servers = [all three].

// startNginxes starts one nginx per port in the web namespace.
func startNginxes(t testing.TB, topo *Topology, opts NginxOpts, ports ...uint16) []*Nginx {
	t.Helper()
	out := make([]*Nginx, len(ports))
	for i, p := range ports {
		out[i] = startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, p), opts)
	}
	return out
}

// serversTOML writes a servers array for ns, with weights when given.
func serversTOML(ns []*Nginx, weights ...int) string {
	items := make([]string, len(ns))
	for i, n := range ns {
		items[i] = fmt.Sprintf("%q", n.Addr.String())
		if i < len(weights) {
			items[i] = fmt.Sprintf("{ address = %q, weight = %d }", n.Addr.String(), weights[i])
		}
	}
	return "[" + strings.Join(items, ", ") + "]"
}

// accessCounts returns how many requests each nginx logged so far.
func accessCounts(t testing.TB, ns []*Nginx) []int {
	t.Helper()
	out := make([]int, len(ns))
	for i, n := range ns {
		out[i] = len(n.AccessLog(t))
	}
	return out
}

// waitAccessTotal waits until the nginxes logged total requests more than
// before, and returns each one's share of them. nginx writes its line after
// the response left: polling the files, with a deadline, is the only way.
func waitAccessTotal(t testing.TB, ns []*Nginx, before []int, total int, timeout time.Duration) []int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		now := accessCounts(t, ns)
		delta, sum := make([]int, len(ns)), 0
		for i := range now {
			delta[i] = now[i] - before[i]
			sum += delta[i]
		}
		if sum >= total {
			return delta
		}
		if time.Now().After(deadline) {
			t.Fatalf("access logs: %d of %d requests after %v (per server %v)", sum, total, timeout, delta)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMultiServerDistribution: 3,000 connections through each algorithm,
// counted per server in the nginx access logs. round_robin with weights
// 1:2:3 gives exactly 500/1000/1500 (±1: the picks are sequential, the
// shares exact); least_conn with equal weights gives each a third ±15%.
// hash_client: 300 clients named by PROXY headers each land on one server;
// after a reload removes one server only that server's clients move, and
// they are about a third (≤ 1/3 + 0.1) of them.
func TestMultiServerDistribution(t *testing.T) {
	const n = 3000
	topo := newTopology(t)
	plain := startNginxes(t, topo, NginxOpts{}, 81, 82, 83)
	pp := startNginxes(t, topo, NginxOpts{ProxyProtocol: true}, 91, 92, 93)
	rr, lc, hash := addrPort(topo.ProxyFront, 8080), addrPort(topo.ProxyFront, 8081), addrPort(topo.ProxyFront, 8082)
	conf := func(hashServers []*Nginx) string {
		return fmt.Sprintf(`shutdown_timeout = "2s"
[[listener]]
name = "rr"
listen = %q
backend = "rr"
[[listener]]
name = "lc"
listen = %q
backend = "lc"
[[listener]]
name = "hash"
listen = %q
backend = "hash"
proxy_protocol = "required"
proxy_protocol_trusted = [%q]
[[backend]]
name = "rr"
servers = %s
balance = "round_robin"
[[backend]]
name = "lc"
servers = %s
[[backend]]
name = "hash"
servers = %s
balance = "hash_client"
send_proxy_protocol = "v2"
`, rr, lc, hash, topo.LBAddr, serversTOML(plain, 1, 2, 3), serversTOML(plain), serversTOML(hashServers))
	}
	cp := startCloseproxy(t, topo, topo.Proxy, conf(pp))

	t.Run("round_robin 1:2:3", func(t *testing.T) {
		before := accessCounts(t, plain)
		requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: rr, N: n, C: 20, ExpectBytes: 3}), n)
		got := waitAccessTotal(t, plain, before, n, 10*time.Second)
		t.Logf("round_robin 1:2:3 over %d connections: %v", n, got)
		for i, want := range []int{500, 1000, 1500} {
			between(t, fmt.Sprintf("requests on %s (weight %d)", plain[i].Addr, i+1), got[i], want-1, want+1)
		}
	})
	t.Run("least_conn", func(t *testing.T) {
		before := accessCounts(t, plain)
		requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: lc, N: n, C: 20, ExpectBytes: 3}), n)
		got := waitAccessTotal(t, plain, before, n, 10*time.Second)
		t.Logf("least_conn over %d connections: %v", n, got)
		for i := range plain {
			between(t, fmt.Sprintf("requests on %s", plain[i].Addr), got[i], n/3*85/100, n/3*115/100)
		}
	})
	t.Run("hash_client", func(t *testing.T) {
		const clients, rounds = 300, 4
		send := func() map[string]string { // client → the one server it landed on
			t.Helper()
			before := accessCounts(t, pp)
			proxyClients(t, topo, hash, clients, rounds)
			waitAccessTotal(t, pp, before, clients*rounds, 10*time.Second)
			on := map[string]string{}
			for i, ng := range pp {
				for _, e := range ng.AccessLog(t)[before[i]:] {
					if prev, seen := on[e.ProxyProtocolAddr]; seen && prev != ng.Addr.String() {
						t.Errorf("client %s on %s and %s", e.ProxyProtocolAddr, prev, ng.Addr)
					}
					on[e.ProxyProtocolAddr] = ng.Addr.String()
				}
			}
			if len(on) != clients {
				t.Fatalf("access logs name %d clients, want %d", len(on), clients)
			}
			return on
		}
		first := send()
		shares := map[string]int{}
		for _, s := range first {
			shares[s]++
		}
		t.Logf("hash_client: %d clients per server %v", clients, shares)
		removed := pp[2].Addr.String()
		after := len(cp.Logs())
		cp.Rewrite(t, conf(pp[:2]))
		cp.Signal(t, syscall.SIGHUP)
		cp.WaitLog(t, "configuration reloaded", after, 5*time.Second)
		second := send()
		moved := 0
		for c, s := range first {
			if second[c] == s {
				continue
			}
			moved++
			if s != removed {
				t.Errorf("client %s moved from %s to %s, but %s stayed", c, s, second[c], s)
			}
		}
		t.Logf("hash_client: removing %s moved %d of %d clients (it had %d)", removed, moved, clients, shares[removed])
		if moved != shares[removed] || float64(moved) > float64(clients)*(1.0/3+0.1) {
			t.Errorf("moved %d clients, want exactly the %d of the removed server, at most 1/3+0.1 of %d", moved, shares[removed], clients)
		}
	})
}

// proxyClients sends, from lb, rounds requests for each of clients
// distinct client addresses (198.18.x.y), each on its own connection that
// starts with a PROXY v1 header naming that address. Bounded: 8 at once,
// a 5 s deadline per connection.
func proxyClients(t testing.TB, topo *Topology, addr string, clients, rounds int) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	errs := make(chan error, clients*rounds)
	for r := range rounds {
		for i := range clients {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				src := fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)
				if err := proxyRequest(t, topo, addr, src, 40000+r); err != nil {
					errs <- fmt.Errorf("client %s: %w", src, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func proxyRequest(t testing.TB, topo *Topology, addr, src string, port int) error {
	c, err := dialFrom(t, topo.LB, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	dst := strings.Split(addr, ":")
	if _, err := fmt.Fprintf(c, "PROXY TCP4 %s %s %d %s\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", src, dst[0], port, dst[1]); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("status %d, body: %v", resp.StatusCode, err)
	}
	return nil
}

// waitServerLog waits for a log line msg naming server, after line after,
// and returns it with its index.
func waitServerLog(t testing.TB, cp *Closeproxy, msg, server string, after int, timeout time.Duration) (Record, int) {
	t.Helper()
	return cp.WaitLogMatch(t, fmt.Sprintf("%q for server %s", msg, server), func(r Record) bool {
		return r.Str("msg") == msg && r.Str("server") == server
	}, after, timeout)
}

func logTime(t testing.TB, r Record) time.Time {
	t.Helper()
	ts, err := time.Parse(tsLayout, r.Str("ts"))
	if err != nil {
		t.Fatalf("log ts %q: %v", r.Str("ts"), err)
	}
	return ts
}

// multiConfig is one listener on proxy:8080 before a backend of servers
// checked every 200 ms, with extra backend keys.
func multiConfig(topo *Topology, ns []*Nginx, backendKeys, health string) string {
	return fmt.Sprintf(`shutdown_timeout = "2s"
[admin]
listen = %q
[[listener]]
name = "web"
listen = %q
backend = "web"
[[backend]]
name = "web"
servers = %s
connect_timeout = "1s"
%s
  [backend.health]
  check = "tcp"
  interval = "200ms"
  timeout = "100ms"
%s
`, adminAddr, addrPort(topo.ProxyFront, 8080), serversTOML(ns), backendKeys, health)
}

// kill ends an nginx the harness started, by its PID, with SIGKILL: every
// connection it had is reset by the kernel.
func kill(t testing.TB, n *Nginx) {
	t.Helper()
	n.expectExit()
	n.Signal(t, syscall.SIGKILL)
	if err := n.Wait(t, 5*time.Second); err == nil {
		t.Fatalf("nginx %s exited cleanly after SIGKILL", n.Addr)
	}
}

// waitDown waits for the log line that took server down, by failed checks
// or passive ejection, logged after line after.
func waitDown(t testing.TB, cp *Closeproxy, server string, after int, timeout time.Duration) Record {
	t.Helper()
	r, _ := cp.WaitLogMatch(t, "taking server "+server+" down", func(r Record) bool {
		msg := r.Str("msg")
		return r.Str("server") == server && (strings.HasPrefix(msg, "server down") || strings.HasPrefix(msg, "server ejected"))
	}, after, timeout)
	return r
}

// TestMultiServerKillOneMidLoad kills one of three nginx under load: the
// only client errors are sessions that were on it (their records name it),
// no session fails to dial (the next server is tried), the server is taken
// down within fall × interval (+ slack), and after it restarts it is eased
// back in: a low share at first, a third once its weight is full.
func TestMultiServerKillOneMidLoad(t *testing.T) {
	const (
		n, c     = 3000, 16
		fall     = 2
		interval = 200 * time.Millisecond
	)
	topo := newTopology(t)
	ngx := startNginxes(t, topo, NginxOpts{}, 81, 82, 83)
	cp := startCloseproxy(t, topo, topo.Proxy, multiConfig(topo, ngx, `balance = "round_robin"`,
		fmt.Sprintf("  fall = %d\n  rise = 2\n  eject_after = 3\n  ease_in = \"2s\"\n", fall)))
	front := addrPort(topo.ProxyFront, 8080)
	dead := ngx[1].Addr.String()

	load := startLoad(t, topo, topo.LB, LoadOpts{Addr: front, N: n, C: c, ExpectBytes: 3,
		CloseDelay: 2 * time.Millisecond, MaxDuration: 15 * time.Second})
	cp.WaitRecords(t, 300, 10*time.Second)
	logged := len(cp.Logs())
	killed := time.Now()
	kill(t, ngx[1])
	down := waitDown(t, cp, dead, logged, 5*time.Second)
	took := logTime(t, down).Sub(killed)
	t.Logf("%s taken down %v after the kill: %q", dead, took, down.Str("msg"))
	if took > fall*interval+time.Second {
		t.Errorf("taken down %v after the kill, want within fall × interval (%v) + 1s", took, fall*interval)
	}
	r := load.Wait(t)
	recs := cp.WaitRecords(t, r.Attempted, 10*time.Second)
	// A session in flight on the killed nginx ends by the kernel's FIN or
	// RST. In tcp mode a FIN before any response byte is an orderly end to
	// the proxy (outcome ok), so a cut session is one on the dead server
	// that failed or got less than a full response (back.bytes_in).
	full := math.Inf(1)
	for _, rec := range recs {
		if rec.Str("outcome") == "ok" && rec.Str("back.server") != dead {
			full = min(full, rec.Num("back.bytes_in"))
		}
	}
	onDead, failedOnDead, failedElsewhere := 0, 0, 0
	for _, rec := range recs {
		ok := rec.Str("outcome") == "ok" && rec.Num("back.bytes_in") >= full
		switch {
		case rec.Str("outcome") == "dial_failed":
			t.Errorf("record: dial_failed after %v tries: %s", rec.Num("back.tries"), rec.Str("error"))
		case rec.Str("back.server") == dead:
			onDead++
			if !ok {
				failedOnDead++
				t.Logf("cut on %s: outcome %s, back.bytes_in %v (a full response is %v), error %q",
					dead, rec.Str("outcome"), rec.Num("back.bytes_in"), full, rec.Str("error"))
			}
		case !ok:
			failedElsewhere++
			t.Errorf("record on %s: outcome %s, back.bytes_in %v, error %q", rec.Str("back.server"), rec.Str("outcome"), rec.Num("back.bytes_in"), rec.Str("error"))
		}
	}
	clientErrors := r.ConnectErrors + r.OtherErrors
	t.Logf("%d sessions on %s, %d of them failed (in flight at the kill); client errors %d: %v",
		onDead, dead, failedOnDead, clientErrors, r.Errors)
	if clientErrors > failedOnDead || failedElsewhere > 0 {
		t.Errorf("client errors %d, records failed on the dead server %d, elsewhere %d: want client errors only for sessions on the dead server",
			clientErrors, failedOnDead, failedElsewhere)
	}
	if failedOnDead > 2*c {
		t.Errorf("%d sessions failed on the dead server, more than twice the %d in flight at once", failedOnDead, c)
	}
	ms := scrape(t, topo.Proxy, adminAddr)
	if up, _ := ms.Get("closeproxy_backend_server_up", "server", dead); up != 0 {
		t.Errorf("closeproxy_backend_server_up{server=%q} = %v after the kill, want 0", dead, up)
	}
	byCheck, _ := ms.Get("closeproxy_backend_server_ejections_total", "server", dead, "cause", "check")
	passive, _ := ms.Get("closeproxy_backend_server_ejections_total", "server", dead, "cause", "passive")
	if byCheck+passive != 1 {
		t.Errorf("ejections of %s: %v by check, %v passive; want one in all", dead, byCheck, passive)
	}

	// Back: restarted on its address, up after rise checks, eased in.
	logged = len(cp.Logs())
	ngx[1] = startNginx(t, topo, topo.Web, dead, NginxOpts{})
	waitServerLog(t, cp, "server up: health checks passed", dead, logged, 5*time.Second)
	const m = 300
	before := accessCounts(t, ngx)
	requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: front, N: m, C: 8, ExpectBytes: 3}), m)
	early := waitAccessTotal(t, ngx, before, m, 10*time.Second)
	// The end of ease-in is logged nowhere: poll the weight gauge, with a
	// deadline, until it is full.
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, _ := scrape(t, topo.Proxy, adminAddr).Get("closeproxy_backend_server_weight", "server", dead)
		if w == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("weight of %s still %v 5s after it came back (ease_in 2s)", dead, w)
		}
		time.Sleep(100 * time.Millisecond)
	}
	before = accessCounts(t, ngx)
	requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: front, N: 2 * m, C: 8, ExpectBytes: 3}), 2*m)
	later := waitAccessTotal(t, ngx, before, 2*m, 10*time.Second)
	t.Logf("after the restart: per server %v while easing in, %v at full weight", early, later)
	if early[1] >= m/4 {
		t.Errorf("easing in: %d of %d sessions on %s, want less than a quarter", early[1], m, dead)
	}
	between(t, "sessions on the restarted server at full weight", later[1], 2*m/3-10, 2*m/3+10)
}

// TestMultiServerReadyz: /readyz stays 200 while any server is up, turns
// 503 only when all three are down, and 200 again once one is back.
func TestMultiServerReadyz(t *testing.T) {
	topo := newTopology(t)
	ngx := startNginxes(t, topo, NginxOpts{}, 81, 82, 83)
	cp := startCloseproxy(t, topo, topo.Proxy, multiConfig(topo, ngx, "", "  fall = 1\n  rise = 1\n"))
	readyz := func() (int, string) {
		t.Helper()
		code, body, err := adminGet(t, topo.Proxy, adminAddr, "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		return code, body
	}
	// /readyz is what is under test and signals nothing: poll it, with a
	// deadline, as an orchestrator would.
	waitReadyz := func(want int) string {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, body := readyz()
			if code == want {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/readyz %d %q after 5s, want %d", code, body, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitReadyz(http.StatusOK)
	for _, ng := range ngx[:2] {
		logged := len(cp.Logs())
		kill(t, ng)
		waitDown(t, cp, ng.Addr.String(), logged, 5*time.Second)
		if code, body := readyz(); code != http.StatusOK {
			t.Fatalf("/readyz %d %q with %s down and another server up, want 200", code, body, ng.Addr)
		}
	}
	kill(t, ngx[2])
	body := waitReadyz(http.StatusServiceUnavailable)
	t.Logf("every server down: /readyz 503 %q", strings.TrimSpace(body))
	if !strings.Contains(body, "no server up") {
		t.Errorf("/readyz body %q does not say no server is up", body)
	}
	ngx[1] = startNginx(t, topo, topo.Web, ngx[1].Addr.String(), NginxOpts{})
	waitReadyz(http.StatusOK)
}

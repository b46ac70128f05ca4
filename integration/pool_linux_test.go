package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPoolWarmTCP checks the tcp warm pool from the records: with warm > 0
// the sessions' backend connections come ready from the pool
// (back.pooled true) and take next to no time to get (back.connect_ms);
// with warm = 0 every one is dialed.
func TestPoolWarmTCP(t *testing.T) {
	const n, warm = 20, 4
	medians := map[string]float64{}
	for _, tc := range []struct {
		name string
		warm int
	}{{"warm 4", warm}, {"warm 0", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			topo := newCountingTopology(t)
			web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true})
			front := addrPort(topo.ProxyFront, 8080)
			cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
				Name: "web", Listen: front, Backend: web.Addr.String(),
				Pool: PoolOpts{Warm: fmt.Sprint(tc.warm)},
			}))
			if tc.warm > 0 {
				waitEstablished(t, topo, topo.Proxy, "dport = :80", tc.warm, 5*time.Second)
			}
			// One at a time, so the refiller keeps up; nginx closes first
			// (Connection: close), the client waits for the EOF.
			requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{
				Addr: front, N: n, C: 1, Connection: "close", Close: "server", ExpectBytes: 3,
			}), n)
			recs := cp.WaitRecords(t, n, 10*time.Second)
			var pooled int
			var ms []float64
			for _, r := range recs {
				if r["back.pooled"] == true {
					pooled++
				}
				if r["back.reused"] != false || r.Num("back.requests") != 0 || r.Str("outcome") != "ok" {
					t.Errorf("record: back.reused %v back.requests %v outcome %q, want false, 0 (tcp), ok",
						r["back.reused"], r.Num("back.requests"), r.Str("outcome"))
				}
				ms = append(ms, r.Num("back.connect_ms"))
			}
			slices.Sort(ms)
			medians[tc.name] = ms[len(ms)/2]
			t.Logf("%s: %d of %d records back.pooled; back.connect_ms min %.3f median %.3f max %.3f",
				tc.name, pooled, n, ms[0], ms[len(ms)/2], ms[len(ms)-1])
			if tc.warm > 0 {
				between(t, "records with back.pooled true", pooled, n*9/10, n)
			} else {
				between(t, "records with back.pooled true", pooled, 0, 0)
				if ms[0] <= 0 {
					t.Errorf("warm 0: back.connect_ms min %v, want every session to have dialed (> 0)", ms[0])
				}
			}
		})
	}
	if w, f := medians["warm 4"], medians["warm 0"]; w != 0 && f != 0 && w >= f {
		t.Errorf("median back.connect_ms: warm %.3f, fresh %.3f; want the warm pool faster", w, f)
	}
}

// TestPoolFaults drives the http1 pool through what a real backend does to
// kept-alive connections: closes them when idle, restarts, refuses.
// Clients must not notice beyond the documented behaviour, and the records
// must say what happened.
func TestPoolFaults(t *testing.T) {
	const conc = 4
	setup := func(t *testing.T, opts NginxOpts) (*Topology, *Nginx, *Closeproxy, string) {
		topo := newCountingTopology(t)
		web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), opts)
		front := addrPort(topo.ProxyFront, 8080)
		cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
			Name: "web", Listen: front, Backend: web.Addr.String(), Protocol: "http1", ConnectTimeout: "1s",
			Pool: PoolOpts{Warm: "2", MaxConns: "8"},
		}))
		return topo, web, cp, front
	}
	load := func(t *testing.T, topo *Topology, front string, n int) LoadResult {
		return runLoad(t, topo, topo.LB, LoadOpts{
			Addr: front, N: n, C: conc, Connection: "close", Close: "server", ExpectBytes: 3, MaxDuration: 10 * time.Second,
		})
	}

	t.Run("nginx closes idle keep-alive connections after 1s", func(t *testing.T) {
		const bursts, n = 3, 16
		topo, web, cp, front := setup(t, NginxOpts{Keepalive: true, KeepaliveTimeout: time.Second})
		var recs []Record
		var prev map[int64]bool // nginx connections the previous burst used
		for i := range bursts {
			if i > 0 {
				time.Sleep(1500 * time.Millisecond) // outlast nginx's keepalive_timeout
			}
			requireAllOK(t, load(t, topo, front, n), n)
			all := cp.WaitRecords(t, (i+1)*n, 10*time.Second)
			burst := all[i*n:]
			used := map[int64]bool{}
			for _, e := range web.WaitAccessLog(t, (i+1)*n, 5*time.Second)[i*n:] {
				used[e.Connection] = true
				if prev[e.Connection] {
					t.Errorf("burst %d: nginx connection %d served the previous burst too, 1.5s idle: want it closed by keepalive_timeout 1s", i+1, e.Connection)
				}
			}
			prev = used
			t.Logf("burst %d: %d nginx connections; %s; back.connect_ms %s", i+1, len(used), tallyBack(burst), connectMS(burst))
			recs = all
		}
		s := tallyBack(recs)
		between(t, "records with outcome ok", s.outcome["ok"], bursts*n, bursts*n)
		proxyTW, webTW := backLegTimeWait(t, topo)
		t.Logf("back-leg TIME-WAIT: proxy %d, web %d", proxyTW, webTW)
	})

	t.Run("nginx restarts between bursts", func(t *testing.T) {
		const n = 40
		opts := NginxOpts{Keepalive: true}
		topo, web, cp, front := setup(t, opts)
		requireAllOK(t, load(t, topo, front, n), n)
		cp.WaitRecords(t, n, 10*time.Second)
		t.Logf("nginx before the restart: %d requests on %d distinct connections", len(web.WaitAccessLog(t, n, 5*time.Second)), distinctConns(web.AccessLog(t)))

		web = restartNginx(t, topo, web, opts)
		requireAllOK(t, load(t, topo, front, n), n)
		recs := cp.WaitRecords(t, 2*n, 10*time.Second)[n:]
		s := tallyBack(recs)
		t.Logf("second burst: %s; back.connect_ms %s", s, connectMS(recs))
		between(t, "second burst records with outcome ok", s.outcome["ok"], n, n)
		between(t, `second burst records with back.reason "retried"`, s.reason["retried"], 0, n)
		log := web.WaitAccessLog(t, n, 5*time.Second)
		t.Logf("nginx after the restart: %d requests on %d distinct connections", len(log), distinctConns(log))
		between(t, "requests the restarted nginx logged", len(log), n, n)
	})

	t.Run("nginx stopped: 502 at once, dial_failed, recovery", func(t *testing.T) {
		const n = 10
		opts := NginxOpts{Keepalive: true}
		topo, web, cp, front := setup(t, opts)
		requireAllOK(t, load(t, topo, front, n), n)
		cp.WaitRecords(t, n, 10*time.Second)

		if err := web.Stop(t); err != nil {
			t.Logf("nginx stopped: %v", err)
		}
		r := load(t, topo, front, n)
		if r.Attempted != n || r.Errors["status 502"] != n {
			t.Errorf("with nginx stopped: %+v, want all %d answered 502", r, n)
		}
		if r.ElapsedMS > 1000 {
			t.Errorf("with nginx stopped: %d connections took %d ms, want the 502s at once (refused dials)", n, r.ElapsedMS)
		}
		recs := cp.WaitRecords(t, 2*n, 10*time.Second)[n:]
		for _, rec := range recs {
			if rec.Str("outcome") != "dial_failed" || !strings.Contains(rec.Str("error"), "refused") || rec.Num("duration_ms") > 500 {
				t.Errorf("record: outcome %q error %q duration_ms %v, want dial_failed, connection refused, quickly",
					rec.Str("outcome"), rec.Str("error"), rec.Num("duration_ms"))
			}
		}
		t.Logf("while stopped: %s; first error %q", tallyBack(recs), recs[0].Str("error"))
		checkBackCloseWithoutBackend(t, recs)

		web = startNginx(t, topo, topo.Web, web.Addr.String(), opts)
		requireAllOK(t, load(t, topo, front, 2*n), 2*n)
		recs = cp.WaitRecords(t, 4*n, 10*time.Second)[2*n:]
		t.Logf("after nginx came back: %s; back.connect_ms %s", tallyBack(recs), connectMS(recs))
		between(t, "records with outcome ok after recovery", tallyBack(recs).outcome["ok"], 2*n, 2*n)
		between(t, "requests the new nginx logged", len(web.WaitAccessLog(t, 2*n, 5*time.Second)), 2*n, 2*n)
		if cp.Exited() {
			t.Fatalf("closeproxy exited: %s", cp.Output())
		}
	})

	t.Run("backend closes a reused connection when the next request arrives", func(t *testing.T) {
		const n = 10
		topo := newCountingTopology(t)
		back := startOneShotBackend(t, topo, addrPort(topo.WebAddr, 81))
		front := addrPort(topo.ProxyFront, 8080)
		cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
			Name: "web", Listen: front, Backend: back, Protocol: "http1",
			Pool: PoolOpts{Warm: "0", MaxConns: "8"},
		}))
		// One at a time: each session after the first gets the connection
		// the one before returned, which the backend closes on its request.
		requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{
			Addr: front, N: n, C: 1, Connection: "close", Close: "server", ExpectBytes: 3,
		}), n)
		recs := cp.WaitRecords(t, n, 10*time.Second)
		s := tallyBack(recs)
		t.Logf("GETs: %s", s)
		between(t, "records with outcome ok", s.outcome["ok"], n, n)
		between(t, `records with back.reason "retried"`, s.reason["retried"], n-1, n-1)
		between(t, "records with back.requests 2 (the retry)", s.requests[2], n-1, n-1)

		// A POST with a body is not retried: 502, backend_reset.
		c, err := dialFrom(t, topo.LB, front)
		if err != nil {
			t.Fatal(err)
		}
		write("POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")(t, c)
		if got := readUntilClosed(t, c); !strings.HasPrefix(string(got), "HTTP/1.1 502 ") {
			t.Errorf("POST on a connection the backend closes: client read %q, want 502", firstLine(got))
		}
		rec := cp.WaitRecords(t, n+1, 10*time.Second)[n]
		t.Logf("POST: outcome %q error %q back.reason %q back.reused %v", rec.Str("outcome"), rec.Str("error"), rec.Str("back.reason"), rec["back.reused"])
		if rec.Str("outcome") != "backend_reset" || rec.Str("back.reason") == "retried" || rec["back.reused"] != true {
			t.Errorf("POST record: outcome %q back.reason %q back.reused %v, want backend_reset, not retried, on a reused connection",
				rec.Str("outcome"), rec.Str("back.reason"), rec["back.reused"])
		}
	})
}

// startOneShotBackend serves, in the web namespace on addr, one keep-alive
// response per connection ("ok\n", Content-Length 3); when a second request
// arrives on the same connection it reads it and closes without answering:
// a backend that closed an idle keep-alive connection just as the proxy
// reused it.
func startOneShotBackend(t testing.TB, topo *Topology, addr string) string {
	t.Helper()
	ln := listenIn(t, topo.Web, addr)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if _, err := io.Copy(io.Discard, req.Body); err != nil || i > 0 {
						return
					}
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return addr
}

// restartNginx stops old by its PID and starts a new nginx on the same
// address with opts.
func restartNginx(t testing.TB, topo *Topology, old *Nginx, opts NginxOpts) *Nginx {
	t.Helper()
	if err := old.Stop(t); err != nil {
		t.Logf("nginx (pid %d) stopped: %v", old.Pid(), err)
	}
	return startNginx(t, topo, topo.Web, old.Addr.String(), opts)
}

// waitEstablished waits until ns holds at least want established
// connections matching filter. Only the kernel knows when the pool's warm
// dials are done; the deadline bounds the polling.
func waitEstablished(t testing.TB, topo *Topology, ns, filter string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := len(sockets(t, topo, ns, "established", filter))
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("in %s: %d established connections (%s) after %v, want %d", ns, got, filter, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkBackCloseWithoutBackend fails for records of sessions that never had
// a backend connection (back.requests 0) yet claim back.close "pooled",
// which the README defines as "returned to the pool".
func checkBackCloseWithoutBackend(t testing.TB, recs []Record) {
	t.Helper()
	bad := 0
	for _, r := range recs {
		if r.Str("back.close") == "pooled" && r.Num("back.requests") == 0 {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf(`%d of %d sessions that sent nothing to a backend (back.requests 0, outcome %q) record back.close "pooled"`,
			bad, len(recs), recs[0].Str("outcome"))
	}
}

func distinctConns(log []AccessEntry) int {
	conns := map[int64]bool{}
	for _, e := range log {
		conns[e.Connection] = true
	}
	return len(conns)
}

// connectMS summarises back.connect_ms: min, median, max, and how many
// sessions dialed (connect_ms above 0.05).
func connectMS(recs []Record) string {
	if len(recs) == 0 {
		return "none"
	}
	var ms []float64
	dialed := 0
	for _, r := range recs {
		v := r.Num("back.connect_ms")
		ms = append(ms, v)
		if v > 0.05 {
			dialed++
		}
	}
	slices.Sort(ms)
	return fmt.Sprintf("min %.3f median %.3f max %.3f (%d of %d above 0.05)", ms[0], ms[len(ms)/2], ms[len(ms)-1], dialed, len(ms))
}

package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The matrix's cells with real peers: nginx behind the proxy, the Go load
// client, wrk and curl in front of it.

// Listener ports of the cells with nginx behind them; nginx listens on
// :80 (client first), :81 (server first) and :82 (racing).
const (
	portClientFirst = 8081
	portServerFirst = 8082
	portRacing      = 8083
)

// Body sizes nginx serves: the racing cell's (one segment, so the
// response and nginx's FIN leave together; head and body under 512
// bytes, so the proxy holds them for its own FIN, which then races the
// client's) and the others'.
const (
	racingBody = 200
	peerBody   = 10000
)

func clientFirstListener(t testing.TB, e *pairEnv) ListenerOpts {
	return e.listenerTo("client_first", portClientFirst, e.web.Addr)
}

func serverFirstListener(t testing.TB, e *pairEnv) ListenerOpts {
	return e.listenerTo("server_first", portServerFirst, e.webAt(81))
}

func racingListener(t testing.TB, e *pairEnv) ListenerOpts {
	return e.listenerTo("racing_fins", portRacing, e.webAt(82))
}

// runClientFirst: keep-alive requests; nginx keeps each connection and the
// client closes after the whole response. The front leg ends client-first
// (clientEnds); the back leg proxy-first: target proxy sends its FIN first
// (nginx reads EOF and closes: TIME-WAIT on the proxy), the others
// withhold it from an idle nginx, whose grace ends in the back leg's
// fallback (a safe reset, or with fallback "fin" a FIN: TIME-WAIT on the
// proxy) or, for nowhere, in a reset anyway.
func runClientFirst(t *testing.T, e *pairEnv) cellOut {
	const n = 200
	r := runLoad(t, e.topo, e.topo.LB, LoadOpts{
		Addr: e.listen(portClientFirst).String(), N: n, C: 20, Path: e.web.BlobPath(peerBody),
		Close: "client", ExpectBytes: peerBody, SHA256: e.web.BlobSHA256(t, peerBody),
	})
	requireAllOK(t, r, n)
	checkServed(t, e.web.WaitAccessPort(t, 80, n, 5*time.Second), n, n, "GET "+e.web.BlobPath(peerBody)+" HTTP/1.1", peerBody)
	recs := waitListenerRecords(t, e.main, "client_first", n, 20*time.Second)
	requireOutcome(t, recs, "ok")
	back := "none"
	if e.pair.back == "proxy" || e.pair.back == "backend" && e.pair.fallback == "fin" {
		back = "proxy"
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{e.listen(portClientFirst), e.web.Addr},
		want: certain(clientEnds(e.pair.front), back)}
}

// runServerFirst: nginx answers Connection: close and closes; the client
// waits for EOF, then closes. The back leg ends backend-first: its FIN
// second leaves TIME-WAIT on nginx, but nowhere ends with a safe reset.
// The front leg ends proxy-first with a client that waits for EOF: target
// proxy sends the FIN first, and every other target must pass it on too
// (rule 1): TIME-WAIT on the proxy in every pair, and no client sees an
// RST.
func runServerFirst(t *testing.T, e *pairEnv) cellOut {
	const n = 200
	r := runLoad(t, e.topo, e.topo.LB, LoadOpts{
		Addr: e.listen(portServerFirst).String(), N: n, C: 20, Path: "/close" + e.web.BlobPath(peerBody),
		Close: "server", ExpectBytes: peerBody, SHA256: e.web.BlobSHA256(t, peerBody),
	})
	requireAllOK(t, r, n)
	if r.ServerResets != 0 {
		t.Errorf("%d clients waiting for EOF got an RST: the FIN they waited for must be passed on (rule 1)", r.ServerResets)
	}
	checkServed(t, e.web.WaitAccessPort(t, 81, n, 5*time.Second), n, n, "GET /close"+e.web.BlobPath(peerBody)+" HTTP/1.1", peerBody)
	recs := waitListenerRecords(t, e.main, "server_first", n, 20*time.Second)
	requireOutcome(t, recs, "ok")
	back := "backend"
	if e.pair.back == "nowhere" {
		back = "none"
	}
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{e.listen(portServerFirst), e.webAt(81)},
		want: certain("proxy", back)}
}

// runRacing: nginx closes right after a one-segment body (Connection:
// close) and the client closes the instant it has the body, so the FINs
// race on both legs. Nothing is certain but agreement with the kernel;
// every response is checked whole.
func runRacing(t *testing.T, e *pairEnv) cellOut {
	addr := e.listen(portRacing)
	done, abandoned := e.race(t, addr)
	total := done
	if abandoned > 0 {
		total = settledAccepted(t, e.topo, "racing_fins", 20*time.Second)
		if total < done || total > done+abandoned {
			t.Errorf("closeproxy accepted %d racing connections; the client completed %d and left at most %d unfinished", total, done, abandoned)
		}
	}
	checkServed(t, e.web.WaitAccessPort(t, 82, done, 5*time.Second), done, total, "GET "+e.web.BlobPath(racingBody)+" HTTP/1.1", racingBody)
	recs := waitListenerRecords(t, e.main, "racing_fins", total, 30*time.Second)
	ok := countBy(recs, "outcome")["ok"]
	if int(ok) < done {
		t.Errorf("%v ok of %d records, want at least the %d completed exchanges: %s", ok, len(recs), done, fmtCounts(countBy(recs, "outcome")))
	}
	t.Logf("racing with %s: %d connections, %d completed; outcomes %s", e.racer, total, done, fmtCounts(countBy(recs, "outcome")))
	return cellOut{cp: e.main, recs: recs, scope: []netip.AddrPort{addr, e.webAt(82)}, want: certain("", "")}
}

// race runs the pair's racing client: it returns the exchanges completed
// and checked, and how many connections it may have left unfinished when
// it stopped (wrk stops mid-flight).
func (e *pairEnv) race(t testing.TB, addr netip.AddrPort) (done, abandoned int) {
	t.Helper()
	url := fmt.Sprintf("http://%s%s", addr, e.web.BlobPath(racingBody))
	switch e.racer {
	case "wrk":
		return raceWrk(t, e.topo, url, e.racing)
	case "curl":
		raceCurl(t, e.topo, url, e.racing)
		return e.racing, 0
	}
	r := runLoad(t, e.topo, e.topo.LB, LoadOpts{
		Addr: addr.String(), N: e.racing, C: 20, Path: e.web.BlobPath(racingBody), Connection: "close",
		Close: "client", ExpectBytes: racingBody, SHA256: e.web.BlobSHA256(t, racingBody), MaxDuration: 40 * time.Second,
	})
	requireAllOK(t, r, e.racing)
	return e.racing, 0
}

// wrkScript makes wrk compare every body with the expected one, stop
// making requests after limit responses and say so (wrk alone runs for a
// duration: the test then interrupts it), and print its figures as one
// JSON line.
const wrkScript = `
local limit, path = %d, %q
local expected
got, bad = 0, 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  local f = assert(io.open(path, "rb"))
  expected = f:read("*a")
  f:close()
end
function response(status, headers, body)
  got = got + 1
  if status ~= 200 or body ~= expected then bad = bad + 1 end
  if got == limit then
    wrk.thread:stop()
    io.write("cpt-wrk-stop\n")
    io.flush()
  end
end
function done(summary, latency, requests)
  local g, b = 0, 0
  for _, th in ipairs(threads) do g = g + th:get("got"); b = b + th:get("bad") end
  local e = summary.errors
  io.write(string.format('cpt-wrk {"got":%%d,"bad":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}\n',
    g, b, e.connect, e.read, e.write, e.status, e.timeout))
end
`

// wrkConns is how many connections wrk keeps open. When it stops, those
// are left unfinished, and one more: wrk reopens the connection whose
// response made it stop before it stops.
const wrkConns = 8

// raceWrk runs wrk with Connection: close (it closes each connection as
// soon as the response is complete) until n responses, each compared
// byte for byte with the blob.
func raceWrk(t testing.TB, topo *Topology, url string, n int) (done, abandoned int) {
	t.Helper()
	bin := needTool(t, "wrk")
	dir := t.TempDir()
	body := filepath.Join(dir, "body")
	writeFile(t, body, blob(racingBody))
	script := filepath.Join(dir, "race.lua")
	writeFile(t, script, []byte(fmt.Sprintf(wrkScript, n, body)))
	out := runWrk(t, topo, bin, "-t1", "-c", fmt.Sprint(wrkConns), "-d", "40s", "--timeout", "5s",
		"-H", "Connection: close", "-s", script, url)
	var r struct{ Got, Bad, Connect, Read, Write, Status, Timeout int }
	_, line, ok := strings.Cut(out, "cpt-wrk ")
	if !ok {
		t.Fatalf("wrk printed no summary:\n%s", out)
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &r); err != nil {
		t.Fatalf("wrk summary %q: %v", line, err)
	}
	t.Logf("wrk: %+v", r)
	if r.Got < n || r.Bad != 0 || r.Connect+r.Read+r.Write+r.Status+r.Timeout != 0 {
		t.Errorf("wrk: %d responses (want %d), %d bodies wrong, errors connect %d read %d write %d status %d timeout %d",
			r.Got, n, r.Bad, r.Connect, r.Read, r.Write, r.Status, r.Timeout)
	}
	return r.Got, wrkConns + 1
}

// runWrk runs wrk in lb and returns its output. Once the script says it
// stopped, wrk is interrupted (SIGINT, by PID, which makes it print its
// summary): repeatedly, every 100 ms, since the signal only ends wrk's
// wait once it reaches the main thread, which it does once the worker
// thread is gone. cmdTimeout bounds the run.
func runWrk(t testing.TB, topo *Topology, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := topo.cmdContext(ctx, topo.LB, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start wrk: %v", err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if sc.Text() == "cpt-wrk-stop" {
			go interrupt(ctx, cmd.Process)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("wrk: %v\n%s%s", err, out.String(), stderr.String())
	}
	return out.String()
}

// interrupt sends SIGINT to p every 100 ms until ctx ends.
func interrupt(ctx context.Context, p *os.Process) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := p.Signal(syscall.SIGINT); err != nil {
			return // it exited
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// raceCurl runs one curl doing n transfers, ten at a time, each with
// Connection: close (curl closes the connection as soon as it has the
// body), then checks each status, size and SHA-256.
func raceCurl(t testing.TB, topo *Topology, url string, n int) {
	t.Helper()
	bin := needTool(t, "curl")
	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("header = \"Connection: close\"\nwrite-out = \"%{http_code} %{size_download}\\n\"\n")
	for i := range n {
		fmt.Fprintf(&cfg, "url = %q\noutput = %q\n", url, filepath.Join(dir, fmt.Sprint(i)))
	}
	conf := filepath.Join(t.TempDir(), "curl.conf")
	writeFile(t, conf, []byte(cfg.String()))
	out := topo.Exec(t, topo.LB, bin, "--no-progress-meter", "--parallel", "--parallel-max", "10",
		"--max-time", "10", "-K", conf)
	want := fmt.Sprintf("200 %d", racingBody)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	bad := 0
	for _, l := range lines {
		if l != want {
			bad++
		}
	}
	sum := sha256.Sum256(blob(racingBody))
	for i := range n {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
		if s := sha256.Sum256(got); err != nil || s != sum {
			bad++
		}
	}
	if len(lines) != n || bad != 0 {
		t.Errorf("curl: %d transfers reported, want %d; %d bad statuses, sizes or bodies", len(lines), n, bad)
	}
	t.Logf("curl: %d transfers, SHA-256 %s each", len(lines), hex.EncodeToString(sum[:])[:12])
}

// checkServed: nginx read at least lo requests, each the one sent (the
// request stream arrived whole), and answered each whole, once per
// connection; at most hi connections in all, of which those past lo (a
// client that stopped mid-flight) may have ended otherwise.
func checkServed(t testing.TB, log []AccessEntry, lo, hi int, request string, size int64) {
	t.Helper()
	var bad []AccessEntry
	for _, a := range log {
		if a.Status != 200 || a.Request != request || a.BodyBytesSent != size || a.ConnectionRequests != 1 {
			bad = append(bad, a)
		}
	}
	if len(log)-len(bad) < lo || len(log) > hi || len(bad) > hi-lo {
		t.Errorf("nginx served %d requests, %d of them not a whole 200 to %q with %d bytes as the connection's only request (e.g. %+v); want %d to %d, at most %d otherwise",
			len(log), len(bad), request, size, bad[:min(len(bad), 1)], lo, hi, hi-lo)
	}
}

// requireOutcome: every record has outcome want and neither leg cut.
func requireOutcome(t testing.TB, recs []Record, want string) {
	t.Helper()
	bad := 0
	for _, r := range recs {
		if r.Str("outcome") == want && r["front.cut"] == false && r["back.cut"] == false {
			continue
		}
		if bad++; bad <= 3 {
			t.Errorf("record %v: outcome %q (error %q), front.cut %v, back.cut %v; want %s, nothing cut",
				r["id"], r.Str("outcome"), r.Str("error"), r["front.cut"], r["back.cut"], want)
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d records not %s", bad, len(recs), want)
	}
}

// waitListenerRecords waits until cp logged at least n records of
// listener and returns them all. The reader signals each new record; the
// timeout bounds the wait. Once closeproxy exited, its log is complete.
func waitListenerRecords(t testing.TB, cp *Closeproxy, listener string, n int, timeout time.Duration) []Record {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		all, changed := cp.log.teardowns()
		recs := byListener(all, listener)
		if len(recs) >= n {
			return recs
		}
		select {
		case <-changed:
		case <-cp.done:
			if all, _ := cp.log.teardowns(); len(byListener(all, listener)) < n {
				t.Fatalf("closeproxy exited after %d of %d records of %s: %v", len(byListener(all, listener)), n, listener, cp.waitErr)
			}
		case <-timer.C:
			t.Fatalf("closeproxy: %d of %d records of listener %s after %v", len(recs), n, listener, timeout)
		}
	}
}

// settledAccepted polls closeproxy's metrics until no session of listener
// is active and returns how many connections it accepted: only closeproxy
// knows how many a client that stops mid-flight opened. The deadline
// bounds the polling.
func settledAccepted(t testing.TB, topo *Topology, listener string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := scrape(t, topo.Proxy, adminAddr)
		active, _ := m.Get("closeproxy_connections_active", "listener", listener)
		accepted, ok := m.Get("closeproxy_connections_accepted_total", "listener", listener)
		if ok && active == 0 {
			return int(accepted)
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener %s: %v sessions still active after %v", listener, active, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

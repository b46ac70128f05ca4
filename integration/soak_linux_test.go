package integration

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSoakTenThousand holds 10,000 relayed connections open at once (each
// proven live by an echoed byte) while short connections churn through a
// second listener, then closes them all: every connection has its record,
// and closeproxy's goroutines (go_goroutines on /metrics) and resident
// memory (VmRSS) return to near where they started. Held, each session
// has its goroutines, or on the event loops none.
func TestSoakTenThousand(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	topo := newTopology(t)
	held, nofile := soakSize(t, 10000)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true})
	echo := scriptBackend(t, topo.Web, addrPort(topo.WebAddr, 82), func(c *net.TCPConn) {
		// a small buffer and no splice (which would take a pipe per
		// connection): the test process has 2 descriptors per session
		var buf [64]byte
		if _, err := io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf[:]); err == nil {
			_ = c.CloseWrite()
		}
	})
	admin := "127.0.0.1:9901"
	holdAddr, churnAddr := addrPort(topo.ProxyFront, 8080), addrPort(topo.ProxyFront, 8081)
	cfg := closeproxyConfigWith(GlobalOpts{AdminListen: admin},
		ListenerOpts{Name: "hold", Listen: holdAddr, Backend: echo, Pool: PoolOpts{Warm: "0", MaxConns: "0"},
			Front: CloseOpts{HalfCloseTimeout: "2s"}, Back: CloseOpts{PeerFinGrace: "300ms", HalfCloseTimeout: "2s"}},
		ListenerOpts{Name: "churn", Listen: churnAddr, Backend: web.Addr.String()},
	)
	cfg = withListenerKey(withListenerKey(cfg, "idle_timeout", `"120s"`), "max_connections", "20000")
	cp := startCloseproxyWrapped(t, topo, topo.Proxy, cfg, "prlimit", fmt.Sprintf("--nofile=%d:%d", nofile, nofile))

	requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{Addr: churnAddr, N: 200, C: 8, ExpectBytes: 3}), 200)
	cp.WaitRecords(t, 200, 10*time.Second)
	g0, rss0 := goroutines(t, topo, admin), vmRSS(t, cp.Pid())
	pipes0 := fdKinds(t, cp.Pid())["pipe"] // its stdout and stderr
	t.Logf("baseline: %d goroutines, VmRSS %d kB", g0, rss0)

	start := time.Now()
	// At most 20,000: a client that closes first keeps TIME-WAIT for 60 s,
	// and the client's namespace has 28,232 ephemeral ports (32768-60999);
	// without -race the churn reached them within its 25 s.
	churn := startLoad(t, topo, topo.LB, LoadOpts{Addr: churnAddr, N: 20000, C: 8, ExpectBytes: 3, MaxDuration: 25 * time.Second})
	conns := holdConns(t, topo.LB, holdAddr, held)
	t.Logf("%d connections held after %v", len(conns), time.Since(start).Round(time.Millisecond))
	echoEach(t, conns)
	gPeak, rssPeak := goroutines(t, topo, admin), vmRSS(t, cp.Pid())
	t.Logf("at %d held (echo checked on each, %v in): %d goroutines, VmRSS %d kB, descriptors %v",
		len(conns), time.Since(start).Round(time.Millisecond), gPeak, rssPeak, fdKinds(t, cp.Pid()))
	if kinds := fdKinds(t, cp.Pid()); kinds["pipe"] > pipes0 || kinds["socket"] < fdsPerSession*held {
		t.Errorf("closeproxy holds %v descriptors for %d idle sessions (%d pipes at start): want %d sockets per session and no splice pipe",
			kinds, held, pipes0, fdsPerSession)
	}
	// The goroutines say where the held sessions live. On goroutines: at
	// least two each.
	if !relayLoop && gPeak < 2*held {
		t.Errorf("%d goroutines with %d sessions held: want at least two per session (the relay and a copy loop)", gPeak, held)
	}
	r := churn.Wait(t)
	if r.OK != r.Attempted || r.Attempted == 0 {
		t.Errorf("churn beside the held connections: %d of %d ok: %v", r.OK, r.Attempted, r.Errors)
	}
	// On the event loops (relay = "loop") none at all: once the churn's
	// records are written, the count is near the baseline however many
	// sessions are held. (During the churn an ended session's record is
	// written by a goroutine of its own, and this test's reader of the
	// records, JSON under -race, falls behind by up to thousands.) The
	// slack is the loops and what runs beside them.
	if relayLoop {
		cp.WaitRecords(t, 200+r.Attempted, 60*time.Second)
		if g := goroutines(t, topo, admin); g > g0+soakLoopSlack {
			t.Errorf("%d goroutines with %d sessions held on the event loops and the churn's records written (baseline %d, peak %d during the churn): want at most %d more than the baseline, none per session",
				g, held, g0, gPeak, soakLoopSlack)
		} else {
			t.Logf("%d goroutines with %d sessions held on the event loops, the churn's records written", g, held)
		}
	}
	rssPeak = max(rssPeak, vmRSS(t, cp.Pid())) // the churn went on growing the heap
	for _, c := range conns {
		c.Close()
	}
	want := 200 + r.Attempted + held
	cp.WaitRecords(t, want, 60*time.Second)
	// closing every held session at once (records, logs, grown stacks)
	// grows the heap past the holding peak until the next collection
	rssPeak = max(rssPeak, vmRSS(t, cp.Pid()))
	t.Logf("records: %v", countBy(cp.Records(), "listener", "outcome"))

	g, rss := settle(t, topo, admin, cp.Pid(), g0, rss0, rssPeak, 15*time.Second)
	t.Logf("after: %d goroutines (baseline %d, peak %d), VmRSS %d kB (baseline %d, peak %d, %.1f kB per held session at peak); soak took %v",
		g, g0, gPeak, rss, rss0, rssPeak, float64(rssPeak-rss0)/float64(held), time.Since(start).Round(time.Millisecond))
	if per := (rssPeak - rss0) / held; per > 64 {
		t.Errorf("VmRSS rose %d kB per held session: want well under 64 kB", per)
	}
	if rss > rssPeak+rssPeak/20 { // 5%: the scavenger and the allocator move a few pages either way
		t.Errorf("VmRSS %d kB after every connection closed, above the peak %d kB", rss, rssPeak)
	}
	checkOneRecordEach(t, cp, want)
}

// soakLoopSlack is how many goroutines above the baseline the soak allows
// on the event loops while it holds its sessions: far fewer than those.
const soakLoopSlack = 100

// settle polls (only the process knows) until goroutines are within 20 of
// g0 and VmRSS has given back at least 70% of its rise, else it fails the
// test. closeproxy returns memory itself once a peak of sessions drained
// (proxy/trim.go); the Go runtime alone would wait for its 2-minute GC.
func settle(t testing.TB, topo *Topology, admin string, pid, g0, rss0, rssPeak int, timeout time.Duration) (int, int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		g, rss := goroutines(t, topo, admin), vmRSS(t, pid)
		gOK, rssOK := g <= g0+20, rss-rss0 <= (rssPeak-rss0)*3/10
		if gOK && rssOK {
			return g, rss
		}
		if time.Now().After(deadline) {
			if !gOK {
				t.Errorf("%d goroutines %v after every connection closed, baseline %d", g, timeout, g0)
			}
			if !rssOK {
				t.Errorf("VmRSS %d kB %v after every connection closed (baseline %d, peak %d): less than 70%% of the rise given back",
					rss, timeout, rss0, rssPeak)
			}
			return g, rss
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// holdConns opens n connections to addr from namespace ns, all from one
// thread inside it (a socket stays in the namespace it was made in).
func holdConns(t testing.TB, ns, addr string, n int) []*net.TCPConn {
	t.Helper()
	conns := make([]*net.TCPConn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	err := inNetns(ns, func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		for range n {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				return fmt.Errorf("connection %d: %w", len(conns)+1, err)
			}
			conns = append(conns, c.(*net.TCPConn))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("hold %d connections to %s: %v", n, addr, err)
	}
	return conns
}

// echoEach sends one byte on every connection and expects it back.
func echoEach(t testing.TB, conns []*net.TCPConn) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	next := make(chan *net.TCPConn)
	for range 64 {
		wg.Go(func() {
			b := make([]byte, 1)
			for c := range next {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err := c.Write([]byte{'e'})
				if err == nil {
					_, err = io.ReadFull(c, b)
				}
				if err != nil || b[0] != 'e' {
					mu.Lock()
					failed++
					mu.Unlock()
				}
				_ = c.SetDeadline(time.Time{})
			}
		})
	}
	for _, c := range conns {
		next <- c
	}
	close(next)
	wg.Wait()
	if failed > 0 {
		t.Errorf("%d of %d held connections did not echo a byte", failed, len(conns))
	}
}

// goroutines reads go_goroutines from closeproxy's /metrics.
func goroutines(t testing.TB, topo *Topology, admin string) int {
	t.Helper()
	v, ok := scrape(t, topo.Proxy, admin).Get("go_goroutines")
	if !ok {
		t.Fatalf("/metrics has no go_goroutines")
	}
	return int(v)
}

// vmRSS is the resident set of pid in kB, from /proc/PID/status.
func vmRSS(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("status of %d: %v", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(rest)[0])
			return kb
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// fdsPerSession: an idle relayed session holds its two sockets and no pipe
// (a direction makes a splice pipe only for a bulk stream). The test
// process holds two as well per session: the client and the echo
// backend's end.
const fdsPerSession = 2

// soakSize raises the test process's descriptor limit for want held
// connections (clients and the echo backend live in it) and returns how
// many connections to hold and closeproxy's limit. Raising a hard limit
// needs CAP_SYS_RESOURCE; without it (containers often drop it) the soak
// holds what the hard limit allows and says so.
func soakSize(t testing.TB, want int) (held int, nofile uint64) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	need := uint64(fdsPerSession*want + 1000)
	lim := unix.Rlimit{Cur: need, Max: max(need, old.Max)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err == nil {
		t.Cleanup(func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
		return want, need
	} else {
		held = min(want, int(old.Max-3000)/fdsPerSession) // headroom for the churn's sockets (~1,600 open at once)
		t.Logf("soak: cannot raise RLIMIT_NOFILE above the hard limit %d (%v; no CAP_SYS_RESOURCE?): holding %d connections, not %d",
			old.Max, err, held, want)
		if old.Cur < old.Max {
			cur := unix.Rlimit{Cur: old.Max, Max: old.Max}
			_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &cur)
			t.Cleanup(func() { _ = unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
		}
		return held, old.Max
	}
}

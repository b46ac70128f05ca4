package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestWarmRefillAndPooledGet(t *testing.T) {
	b := newBackend(t, false)
	dials := new(counter)
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, Warm: 3, MaxIdleAge: time.Minute}, dials.dial)
	run(t, p)
	waitFor(t, "3 warm connections", func() bool { return p.Stats().Idle == 3 })

	c := get(t, p)
	if !c.Pooled || c.Reused || c.Uses != 0 {
		t.Errorf("warm Get: Pooled=%v Reused=%v Uses=%d, want a pooled never-used connection", c.Pooled, c.Reused, c.Uses)
	}
	waitFor(t, "refill after a take", func() bool { s := p.Stats(); return s.Idle == 3 && s.InUse == 1 })
	if n := dials.calls.Load(); n != 4 {
		t.Errorf("%d dials, want 3 warm + 1 refill: Get must not dial while warm connections are idle", n)
	}
	if s := p.Stats(); s.Pooled != 1 || s.Dialed != 4 {
		t.Errorf("stats %+v, want Pooled 1, Dialed 4", s)
	}
	drop(p, c)
}

func TestPutGetReuse(t *testing.T) {
	b := newBackend(t, false)
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, MaxIdleAge: time.Minute}, nil)

	c := get(t, p)
	if c.Pooled || c.Reused || c.Uses != 0 || c.Dial <= 0 {
		t.Fatalf("fresh Get: Pooled=%v Reused=%v Uses=%d Dial=%v", c.Pooled, c.Reused, c.Uses, c.Dial)
	}
	local := c.LocalAddr().String()
	for want := 1; want <= 2; want++ {
		p.Put(c)
		c = get(t, p)
		if !c.Pooled || !c.Reused || c.Uses != want || c.LocalAddr().String() != local {
			t.Fatalf("Get after Put %d: Pooled=%v Reused=%v Uses=%d addr %s (want %s)",
				want, c.Pooled, c.Reused, c.Uses, c.LocalAddr(), local)
		}
	}
	if s := p.Stats(); s.Dialed != 1 || s.Reused != 2 || s.InUse != 1 || s.Idle != 0 {
		t.Errorf("stats %+v, want Dialed 1, Reused 2, InUse 1, Idle 0", s)
	}
	p.Put(c)
	p.Put(c) // a second Put is ignored, not counted twice
	if s := p.Stats(); s.InUse != 0 || s.Idle != 1 {
		t.Errorf("after a double Put: %+v, want InUse 0, Idle 1", s)
	}
}

// putDead puts n connections into p, lets the backend spoil them with spoil,
// and waits until the kernel shows each one no longer alive.
func putDead(t *testing.T, p *Pool, b *backend, n int, spoil func()) {
	t.Helper()
	var cs []*Conn
	for range n {
		cs = append(cs, get(t, p))
		b.next(t)
	}
	for _, c := range cs {
		p.Put(c)
	}
	spoil()
	var pr prober
	for _, c := range cs {
		waitFor(t, "the kernel to see the backend's close", func() bool { return pr.check(c.raw) != alive })
	}
}

func TestGetNeverReturnsDead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(b *backend)
	}{
		{"backend closed idle connections", (*backend).closeAll},
		{"backend wrote unasked bytes", func(b *backend) {
			b.mu.Lock()
			defer b.mu.Unlock()
			for _, c := range b.conns {
				_, _ = c.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n"))
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, false)
			p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, MaxIdleAge: time.Minute}, nil)
			putDead(t, p, b, 3, func() { tc.spoil(b) })
			c := get(t, p)
			if c.Pooled {
				t.Error("Get returned a dead idle connection")
			}
			if s := p.Stats(); s.Dead != 3 || s.Evicted != 3 || s.Idle != 0 || s.InUse != 1 {
				t.Errorf("stats %+v, want 3 dead evicted, 1 in use", s)
			}
			drop(p, c)
		})
	}
}

// The sweep evicts idle connections the backend closed. It peeks at
// least once a second, so one does not wait a quarter of a long
// max_idle_age (7.5 s at the default 30 s) in CLOSE-WAIT: waitFor gives up
// after 5 s.
func TestSweepEvictsDead(t *testing.T) {
	for _, age := range []time.Duration{400 * time.Millisecond, 30 * time.Second} {
		b := newBackend(t, false)
		p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, MaxIdleAge: age}, nil)
		putDead(t, p, b, 2, b.closeAll)
		run(t, p)
		waitFor(t, fmt.Sprintf("the sweep to evict 2 dead connections (max_idle_age %v)", age), func() bool {
			s := p.Stats()
			return s.Idle == 0 && s.Dead == 2
		})
	}
}

func TestMaxIdleAgeEvictsWithRST(t *testing.T) {
	b := newBackend(t, false)
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, Warm: 2, MaxIdleAge: 150 * time.Millisecond}, nil)
	stop := run(t, p)
	port := b.ln.Addr().(*net.TCPAddr).Port

	for i := range 4 { // the first two warm connections, then their replacements
		c := b.next(t)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("backend read on warm connection %d: %v, want ECONNRESET", i, err)
		}
	}
	if s := p.Stats(); s.Evicted < 4 || s.Dead != 0 {
		t.Errorf("stats %+v, want at least 4 aged evictions, none dead", s)
	}
	stop()
	if held := timeWaits(t, port, b.accepted4Tuples()); len(held) != 0 {
		t.Errorf("TIME-WAIT sockets on the pool's connections: %q, want none", held)
	}
}

// timeWaits lists, with ss, the TIME-WAIT sockets on port whose 4-tuple
// ("local peer", either end's view) is in tuples: matched by 4-tuple, as
// the port may be an old ephemeral port of another test's connection,
// whose TIME-WAIT outlived it. Without ss the test is marked skipped
// (after its other checks ran) rather than passing with the count
// unchecked; ss failing fails the test.
func timeWaits(t *testing.T, port int, tuples map[string]bool) []string {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss not found: the TIME-WAIT count is not checked")
	}
	p := strconv.Itoa(port)
	out, err := exec.Command("ss", "-Htan", "state", "time-wait",
		"( sport = :"+p+" or dport = :"+p+" )").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	var held []string
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) == 4 && tuples[f[2]+" "+f[3]] {
			held = append(held, f[2]+" "+f[3])
		}
	}
	return held
}

func TestRunStopResetsIdle(t *testing.T) {
	b := newBackend(t, false)
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, Warm: 3, MaxIdleAge: time.Minute}, nil)
	stop := run(t, p)
	waitFor(t, "3 warm connections", func() bool { return p.Stats().Idle == 3 })
	held := get(t, p)
	waitFor(t, "refill", func() bool { return p.Stats().Idle == 3 })
	stop()

	if s := p.Stats(); s.Idle != 0 || s.Evicted != 3 {
		t.Errorf("after Run: %+v, want Idle 0, Evicted 3", s)
	}
	for i := range 4 {
		c := b.next(t)
		if c.RemoteAddr().String() == held.LocalAddr().String() {
			continue // the held connection is the caller's until Put
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("backend read on connection %d: %v, want ECONNRESET", i, err)
		}
	}
	if _, err := p.Get(context.Background()); !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Get after Run: %v, want ErrPoolClosed", err)
	}
	p.Put(held) // resets it: the pool is closed
	if s := p.Stats(); s.Evicted != 4 || s.InUse != 0 {
		t.Errorf("after Put on a closed pool: %+v, want Evicted 4, InUse 0", s)
	}
}

// TestWarmRefillDialsConcurrently: up to maxRefillers warm dials are in
// flight at once (each dial here waits until all of them are), and while a
// backend refuses, only one refiller retries.
func TestWarmRefillDialsConcurrently(t *testing.T) {
	b := newBackend(t, false)
	var inflight atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	dials := new(counter)
	barrier := func(ctx context.Context, addr string) (*net.TCPConn, error) {
		if inflight.Add(1) == maxRefillers {
			once.Do(func() { close(all) })
		}
		select {
		case <-all:
		case <-time.After(5 * time.Second):
			return nil, errors.New("the refillers never had 4 dials in flight at once")
		}
		return dials.dial(ctx, addr)
	}
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: 10 * time.Second, Warm: 2 * maxRefillers}, barrier)
	run(t, p)
	waitFor(t, "the warm connections", func() bool { return p.Stats().Idle == 2*maxRefillers })

	refused := new(counter)
	dead := b.addr
	b.close() // nothing listens there any more
	q := newPool(t, Config{Address: dead, ConnectTimeout: time.Second, Warm: 2 * maxRefillers,
		BackoffMin: 200 * time.Millisecond, BackoffMax: 200 * time.Millisecond}, refused.dial)
	run(t, q)
	waitFor(t, "the first failures", func() bool { return q.Stats().Failing > 0 })
	n0 := refused.calls.Load()
	time.Sleep(500 * time.Millisecond) // the window in which the retries are counted
	if n := refused.calls.Load() - n0; n > 4 {
		t.Errorf("%d dials to a refusing backend in 500ms with a 200ms backoff: want one refiller retrying (at most ~3), not %d", n, maxRefillers)
	}
}

// ones is n loop indexes 1.
func ones(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

// GetIdleFor's pick: among the newest homeLook idle connections, the
// newest that the caller's loop watches already; else the newest. The
// others keep their order.
func TestPopIdlePrefersTheCallersLoop(t *testing.T) {
	homes := func(p *Pool) (hs []int) {
		for _, c := range p.idle {
			hs = append(hs, c.Bare.Home)
		}
		return hs
	}
	for _, tc := range []struct {
		idle       []int // Bare.Home, oldest first
		home, took int
		left       []int
	}{
		{[]int{0, 1, 0, 1}, 0, 0, []int{0, 1, 1}},
		{[]int{0, 1, 0, 1}, 1, 1, []int{0, 1, 0}},
		{append([]int{0}, ones(homeLook-1)...), 0, 0, ones(homeLook - 1)},                  // the look's oldest
		{append([]int{0}, ones(homeLook)...), 0, 1, append([]int{0}, ones(homeLook-1)...)}, // beyond the look: the newest
		{[]int{1, -1, 0, -1}, -1, -1, []int{1, -1, 0}},                                     // no preference
		{[]int{2, 0, 1, 1}, 0, 0, []int{2, 1, 1}},
	} {
		p := &Pool{}
		for _, h := range tc.idle {
			p.idle = append(p.idle, &Conn{Bare: &Bare{FD: -1, Home: h}})
		}
		c := p.popIdleLocked(tc.home)
		if c.Bare.Home != tc.took || !slices.Equal(homes(p), tc.left) || !c.out {
			t.Errorf("idle %v, for loop %d: took one of %d leaving %v; want %d leaving %v", tc.idle, tc.home, c.Bare.Home, homes(p), tc.took, tc.left)
		}
	}
}

// A backend that sends first (a greeting on connect: SMTP, FTP, MySQL)
// fills every warm connection with bytes nobody asked for, and each Get
// evicted them all while the refillers dialed as many again. The first
// greeting found stops the warm dials, said once at warn; Gets dial
// their own connection, whose greeting is fresh.
func TestBackendThatSpeaksFirstStopsWarmDials(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []*net.TCPConn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			c.Write([]byte("220 ready\r\n"))
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			closeReset(&Conn{TCPConn: c})
		}
	})
	core, logs := observer.New(zap.WarnLevel)
	const warm = 3
	p := New(Config{Address: ln.Addr().String(), ConnectTimeout: time.Second, Warm: warm, MaxIdleAge: time.Minute}, new(counter).dial, zap.New(core))
	run(t, p)
	waitFor(t, "the warm connections", func() bool { return p.Stats().Dialed >= warm })
	const gets = 5
	for range gets {
		c := get(t, p)
		drop(p, c)
		waitFor(t, "no warm dial under way", func() bool { return p.Stats().Dialing == 0 })
	}
	if n := logs.FilterMessageSnippet("backend sends first").Len(); n != 1 {
		t.Errorf("%d warnings that the backend sends first, want 1", n)
	}
	// warm dialed before the first greeting was found, as many as were
	// under way then, and one per Get: nothing more.
	if s := p.Stats(); s.Dialed > warm+maxRefillers+gets {
		t.Errorf("%d dials for %d Gets (%d evicted): the warm connections are still dialed", s.Dialed, gets, s.Evicted)
	}
}

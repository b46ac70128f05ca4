package pool

import (
	"context"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

type getResult struct {
	c   *Conn
	err error
}

// getAsync starts a Get and waits until it is blocked at the cap.
func getAsync(t *testing.T, p *Pool) <-chan getResult {
	t.Helper()
	res := make(chan getResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := p.Get(ctx)
		res <- getResult{c, err}
	}()
	waitFor(t, "Get to wait for a slot", func() bool { return p.Stats().Waiting == 1 })
	return res
}

func TestMaxConnsWaitsForRelease(t *testing.T) {
	b := newBackend(t, false)
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: 5 * time.Second, MaxConns: 1}, nil)
	c1 := get(t, p)

	res := getAsync(t, p)
	drop(p, c1)
	r := <-res
	if r.err != nil || r.c.Pooled {
		t.Fatalf("Get after Release: %v (pooled %v), want a fresh dial", r.err, r.c != nil && r.c.Pooled)
	}

	res = getAsync(t, p)
	p.Put(r.c)
	r2 := <-res
	if r2.err != nil || !r2.c.Pooled || r2.c != r.c {
		t.Fatalf("Get after Put: %v, want the connection just Put", r2.err)
	}
	if s := p.Stats(); s.Dialed != 2 || s.InUse != 1 || s.Waiting != 0 {
		t.Errorf("stats %+v, want Dialed 2, InUse 1, Waiting 0", s)
	}
	drop(p, r2.c)
}

func TestMaxConnsExhausted(t *testing.T) {
	b := newBackend(t, false)
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: 100 * time.Millisecond, MaxConns: 1}, nil)
	held := get(t, p)
	defer drop(p, held)

	start := time.Now()
	_, err := p.Get(context.Background())
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Get at the cap: %v, want ErrPoolExhausted", err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("gave up after %v, want ConnectTimeout 100ms", waited)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = p.Get(ctx)
	if !errors.Is(err, ErrPoolExhausted) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get at the cap, caller's deadline first: %v, want ErrPoolExhausted and DeadlineExceeded", err)
	}
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestDialFailuresBackOff(t *testing.T) {
	dials := new(counter)
	p := newPool(t, Config{Address: closedPort(t), ConnectTimeout: time.Second, Warm: 4}, dials.dial)
	stop := run(t, p)
	time.Sleep(time.Second) // outlast several retry delays (100ms, 200ms, 400ms … with jitter)
	stop()

	// A hot loop would dial thousands of times a second; 100ms doubling with
	// jitter down to half allows about 5 attempts in a second.
	n := dials.calls.Load()
	if n < 2 || n > 8 {
		t.Errorf("%d dial attempts in 1s against a closed port, want 2..8", n)
	}
	// The last dial may have met stop's cancel: abandoned, counted as nothing.
	if s := p.Stats(); s.DialFailures > uint64(n) || s.DialFailures+1 < uint64(n) || s.Failing != int(s.DialFailures) || s.LocalDialFailures != 0 {
		t.Errorf("stats %+v, want %d backend failures in a row (the last may be abandoned)", s, n)
	}

	_, err := p.Get(context.Background())
	if !errors.Is(err, ErrPoolClosed) {
		t.Errorf("Get after Run: %v, want ErrPoolClosed", err)
	}
}

func TestDialErrorWrapped(t *testing.T) {
	addr := closedPort(t)
	p := newPool(t, Config{Address: addr, ConnectTimeout: time.Second}, nil)
	_, err := p.Get(context.Background())
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.HasPrefix(err.Error(), "dial backend "+addr+": ") {
		t.Errorf("Get against a closed port: %v, want \"dial backend %s: …\" wrapping ECONNREFUSED", err, addr)
	}
	if s := p.Stats(); s.DialFailures != 1 || s.Failing != 1 || s.InUse != 0 {
		t.Errorf("stats %+v, want 1 backend failure and the slot freed", s)
	}
}

// TestLocalDialErrorIsNotBackendFailure binds to an address this host does
// not have: connect fails with EADDRNOTAVAIL, as it does when the ephemeral
// ports toward one backend run out.
func TestLocalDialErrorIsNotBackendFailure(t *testing.T) {
	b := newBackend(t, false)
	dials := &counter{d: net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1)}}}
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, Warm: 2,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond}, dials.dial)

	_, err := p.Get(context.Background())
	if !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Fatalf("Get: %v, want EADDRNOTAVAIL", err)
	}
	stop := run(t, p)
	waitFor(t, "the refiller to retry", func() bool { return p.Stats().LocalDialFailures >= 3 })
	stop()
	// The refiller's last dial may have met stop's cancel before its bind:
	// a dial the caller abandoned is counted as nothing.
	if s, n := p.Stats(), uint64(dials.calls.Load()); s.DialFailures != 0 || s.Failing != 0 || s.LocalDialFailures < 3 || s.LocalDialFailures+1 < n {
		t.Errorf("stats %+v after %d dials, want every failure local (the last may be abandoned), none blamed on the backend", s, n)
	}
}

// TestConcurrentUseKeepsTheCap mixes Get, Put and Release from many
// goroutines while Run refills and sweeps, and checks the cap and the
// accounting.
func TestConcurrentUseKeepsTheCap(t *testing.T) {
	b := newBackend(t, false)
	const maxConns = 4
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: 5 * time.Second, Warm: 2,
		MaxIdleAge: 100 * time.Millisecond, MaxConns: maxConns}, nil)
	stop := run(t, p)

	var mu sync.Mutex
	held, peak := 0, 0
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 100 {
				c, err := p.Get(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				held++
				peak = max(peak, held)
				mu.Unlock()
				runtime.Gosched()
				mu.Lock()
				held--
				mu.Unlock()
				if (g+i)%3 == 0 {
					drop(p, c)
				} else {
					p.Put(c)
				}
			}
		})
	}
	wg.Wait()
	if peak > maxConns {
		t.Errorf("%d connections held at once, cap %d", peak, maxConns)
	}
	s := p.Stats()
	if s.InUse != 0 || s.Waiting != 0 || s.Idle+s.Dialing > maxConns {
		t.Errorf("stats %+v after all returned, want nothing in use and at most %d idle", s, maxConns)
	}
	stop()
}

// Once a session's own dial succeeds, the refiller that retries a failing
// backend does so at once, not at the end of its backoff (here a minute):
// the warm connections come back with the backend, and the log's "backend
// dial recovered" with them.
func TestRefillerRecoversWithASessionsDial(t *testing.T) {
	b := newBackend(t, false)
	var down atomic.Bool
	down.Store(true)
	dials := new(counter)
	dial := func(ctx context.Context, addr string) (*net.TCPConn, error) {
		if down.Load() {
			dials.calls.Add(1)
			return nil, syscall.ECONNREFUSED
		}
		return dials.dial(ctx, addr)
	}
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, Warm: 2,
		BackoffMin: time.Minute, BackoffMax: time.Minute}, dial)
	run(t, p)
	waitFor(t, "the refillers' first failure", func() bool { return p.Stats().Failing > 0 })
	down.Store(false)
	c, err := p.Get(context.Background()) // a session dials: the backend is back
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(c)
	waitFor(t, "the warm connections, well before the minute's backoff", func() bool { return p.Stats().Idle == 2 })
}

// A session's dial that succeeds while the refillers fail for a local
// reason (no ephemeral port) does not cut their backoff short: each such
// success would otherwise draw a refill dial that takes a port the next
// session needs, or fails again for lack of one. The backoff is a minute;
// twenty sessions dial; no refill dial follows within half a second,
// where before each session's success woke one at once.
func TestRefillerKeepsItsBackoffAfterALocalFailure(t *testing.T) {
	b := newBackend(t, false)
	type session struct{}
	refills, sessions := new(atomic.Int64), new(counter)
	dial := func(ctx context.Context, addr string) (*net.TCPConn, error) {
		if ctx.Value(session{}) != nil {
			return sessions.dial(ctx, addr)
		}
		refills.Add(1)
		return nil, syscall.EADDRNOTAVAIL
	}
	p := newPool(t, Config{Address: b.addr, ConnectTimeout: time.Second, Warm: 2,
		BackoffMin: time.Minute, BackoffMax: time.Minute}, dial)
	run(t, p)
	waitFor(t, "the refillers' first local failure", func() bool { return p.Stats().LocalDialFailures > 0 })
	before := refills.Load()
	ctx := context.WithValue(context.Background(), session{}, true)
	for range 20 {
		c, err := p.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p.Release(c)
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := refills.Load(); n > before {
			t.Fatalf("%d refill dials after %d sessions dialed, within a minute's backoff of a local failure; want none", n-before, sessions.calls.Load())
		}
		time.Sleep(5 * time.Millisecond) // absence has no event to await: bounded look
	}
	if got := sessions.calls.Load(); got != 20 {
		t.Errorf("%d session dials, want 20 (nothing pooled)", got)
	}
}

package engine

import (
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.Cleanup(exitUnlessPipesLeft)) }

// policyClose is a leg policy with test-sized timers.
func policyClose(target policy.Target, fb policy.Fallback) config.Close {
	return config.Close{TimeWait: target, PeerFinGrace: 300 * time.Millisecond, AdaptiveGrace: false,
		Fallback: fb, HalfCloseTimeout: 2 * time.Second, DrainTimeout: time.Second}
}

// relayed is a session relayed by the engine between a scripted client and
// a scripted backend over loopback.
type relayed struct {
	client, backend *net.TCPConn // the peers' ends
	rec             *Recorder
	done            chan struct{} // closed when Relay returned
	drain, kill     chan struct{}
}

// onLoops says whether the tests relay on event loops (Loops) instead of
// goroutines: CLOSEPROXY_TEST_RELAY=loop.
var onLoops = os.Getenv("CLOSEPROXY_TEST_RELAY") == "loop"

// relay starts Relay with front and back policies and idle timeout; the
// test fails if it still runs at the test's end.
func relay(t testing.TB, front, back config.Close, idle time.Duration, with ...func(*Session)) *relayed {
	t.Helper()
	return relayTuned(t, front, back, idle, nil, with...)
}

// relayTuned is relay with the proxy's sockets tuned first (startTuned).
func relayTuned(t testing.TB, front, back config.Close, idle time.Duration, tune func(proxyFront, proxyBack *net.TCPConn), with ...func(*Session)) *relayed {
	t.Helper()
	r := startTuned(t, loopback.Listener(t), loopback.Listener(t), front, back, idle, tune, with...)
	t.Cleanup(func() {
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("relay still running at the end of the test")
			close(r.kill)
			<-r.done
		}
	})
	return r
}

// startRelay starts Relay between a client of frontLn and a backend of
// backLn (two listeners, so that no 4-tuple can serve both legs); it may
// sessionIDs numbers the test sessions in the order they start, as the
// proxy does.
var sessionIDs atomic.Uint64

// run on any goroutine (it fails no test). with adjusts the Session
// before it starts.
func startRelay(t testing.TB, frontLn, backLn *net.TCPListener, front, back config.Close, idle time.Duration, with ...func(*Session)) *relayed {
	return startTuned(t, frontLn, backLn, front, back, idle, nil, with...)
}

// startTuned is startRelay with tune, when not nil, called on the proxy's
// two sockets before the relay starts.
func startTuned(t testing.TB, frontLn, backLn *net.TCPListener, front, back config.Close, idle time.Duration,
	tune func(proxyFront, proxyBack *net.TCPConn), with ...func(*Session)) *relayed {
	client, proxyFront := dialPair(frontLn)
	proxyBack, backend := dialPair(backLn)
	if tune != nil {
		tune(proxyFront, proxyBack)
	}
	r := &relayed{client: client, backend: backend, done: make(chan struct{}),
		drain: make(chan struct{}), kill: make(chan struct{}),
		rec: NewRecorder(sessionIDs.Add(1), "web", "app", front.TimeWait, back.TimeWait)}
	r.rec.Accepted(loopback.AddrPort(proxyFront.LocalAddr()), loopback.AddrPort(proxyFront.RemoteAddr()), loopback.AddrPort(nil))
	r.rec.Connected(false, false, loopback.AddrPort(proxyBack.LocalAddr()), loopback.AddrPort(proxyBack.RemoteAddr()))
	s := &Session{Rec: r.rec, Front: front, Back: back, Idle: idle, Drain: r.drain, Kill: r.kill}
	for _, f := range with {
		f(s)
	}
	if onLoops {
		ls, err := NewLoops(1, r.drain, r.kill)
		if err == nil {
			err = ls.Relay(s, TCP(proxyFront), TCP(proxyBack), Pending{}, func() { close(r.done) })
		}
		if err != nil {
			panic(err)
		}
		t.Cleanup(func() {
			client.Close()
			backend.Close()
			select {
			case <-r.done:
				ls.Close()
			case <-time.After(10 * time.Second): // the relay hangs: goleak will say where
			}
		})
		return r
	}
	go func() {
		defer close(r.done)
		s.Relay(proxyFront, proxyBack, Pending{})
	}()
	t.Cleanup(func() { client.Close(); backend.Close() })
	return r
}

// pairing keeps concurrent dialPairs from accepting each other's
// connections.
var pairing sync.Mutex

// dialPair dials ln and accepts; a failure panics (it is the loopback).
func dialPair(ln *net.TCPListener) (dialed, accepted *net.TCPConn) {
	pairing.Lock()
	defer pairing.Unlock()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		panic(err)
	}
	a, err := ln.AcceptTCP()
	if err != nil {
		panic(err)
	}
	return d, a
}

// wait waits for Relay to return and returns the record.
func (r *relayed) wait(t testing.TB, within time.Duration) *Teardown {
	t.Helper()
	select {
	case <-r.done:
		return r.rec.Done()
	case <-time.After(within):
		t.Fatalf("relay did not end within %v", within)
		return nil
	}
}

// stream is what one end read: its SHA-256, its length, and how it ended
// (nil: EOF; ECONNRESET: an RST).
type stream struct {
	sum [32]byte
	n   int64
	err error
}

func readAll(c *net.TCPConn) stream {
	h := sha256.New()
	n, err := io.Copy(h, c)
	var s stream
	copy(s.sum[:], h.Sum(nil))
	s.n, s.err = n, err
	return s
}

// readAllAsync reads c to its end on a goroutine.
func readAllAsync(c *net.TCPConn) <-chan stream {
	ch := make(chan stream, 1)
	go func() { ch <- readAll(c) }()
	return ch
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// payload returns n deterministic bytes and their SHA-256.
func payload(n int, seed byte) ([]byte, [32]byte) {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b, sha256.Sum256(b)
}

// passRequest has r's client send n bytes (seed's payload), then shut
// down writing if halfClose, and fails the test unless the backend reads
// them whole by SHA-256 within 5 s.
func passRequest(t *testing.T, r *relayed, n int, seed byte, halfClose bool) {
	t.Helper()
	request, sum := payload(n, seed)
	recv(t, writeAsync(r.client, request, halfClose), time.Second, "request")
	_ = r.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, n)
	if _, err := io.ReadFull(r.backend, got); err != nil || sha256.Sum256(got) != sum {
		t.Fatalf("backend read %d bytes (%v); want the request by SHA-256", len(got), err)
	}
}

// writeAsync writes b to c on a goroutine, then shuts down writing if
// closeWrite.
func writeAsync(c *net.TCPConn, b []byte, closeWrite bool) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		if err == nil && closeWrite {
			err = c.CloseWrite()
		}
		ch <- err
	}()
	return ch
}

func recv[T any](t testing.TB, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("%s: nothing within %v", what, within)
		var zero T
		return zero
	}
}

// entered signals the polled waits of phase p that start (pollingHook),
// until the test ends; one not yet taken stands for those after it.
func entered(t testing.TB, p phase) <-chan struct{} {
	ch := make(chan struct{}, 1)
	pollingHook = func(q phase) {
		if q == p {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	t.Cleanup(func() { pollingHook = nil })
	return ch
}

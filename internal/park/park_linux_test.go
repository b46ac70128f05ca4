package park

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair is a connected loopback pair: the server's side is parked.
func pair(t *testing.T) (client, server *net.TCPConn) {
	return loopback.Pair(t, loopback.Listener(t))
}

func fdOf(t *testing.T, c *net.TCPConn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := raw.Control(func(s uintptr) { fd = int(s) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

func newParker(t *testing.T) *Parker {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// woken is a wake function that counts its calls and signals the first.
type woken struct {
	n  atomic.Int32
	ch chan struct{}
}

func newWoken() *woken { return &woken{ch: make(chan struct{})} }

func (w *woken) wake() {
	if w.n.Add(1) == 1 {
		close(w.ch)
	}
}

func (w *woken) await(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w.ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("not woken by %s after 5s", what)
	}
}

func TestParkWakesOnWhatArrives(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(c *net.TCPConn) error
	}{
		{"bytes", func(c *net.TCPConn) error { _, err := c.Write([]byte("GET")); return err }},
		{"fin", func(c *net.TCPConn) error { return c.CloseWrite() }},
		{"rst", func(c *net.TCPConn) error { _ = c.SetLinger(0); return c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newParker(t)
			c, s := pair(t)
			w := newWoken()
			if _, err := p.Park(fdOf(t, s), time.Now().Add(time.Hour), w.wake); err != nil {
				t.Fatal(err)
			}
			if n := p.Parked(); n != 1 {
				t.Fatalf("parked: %d, want 1", n)
			}
			if err := tc.send(c); err != nil {
				t.Fatal(err)
			}
			w.await(t, tc.name)
			if n := p.Parked(); n != 0 {
				t.Fatalf("parked after the wake-up: %d, want 0", n)
			}
			// What arrived is still there to read: parking read nothing.
			if tc.name == "bytes" {
				buf := make([]byte, 8)
				n, err := s.Read(buf)
				if err != nil || string(buf[:n]) != "GET" {
					t.Fatalf("read after the wake-up: %q, %v", buf[:n], err)
				}
			}
		})
	}
}

// Bytes already waiting when the socket is parked wake it at once.
func TestParkWakesForBytesAlreadyThere(t *testing.T) {
	p := newParker(t)
	c, s := pair(t)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := s.Read(buf); err != nil { // the byte is in: what follows is too
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	w := newWoken()
	// The second byte may still be on its way; epoll reports it either way.
	if _, err := p.Park(fdOf(t, s), time.Now().Add(time.Hour), w.wake); err != nil {
		t.Fatal(err)
	}
	w.await(t, "a byte sent before the park")
}

func TestParkWakesAtItsTime(t *testing.T) {
	p := newParker(t)
	_, s := pair(t)
	w := newWoken()
	start := time.Now()
	if _, err := p.Park(fdOf(t, s), start.Add(50*time.Millisecond), w.wake); err != nil {
		t.Fatal(err)
	}
	w.await(t, "its time")
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("woken after %v, before its time (50ms)", d)
	}
	if n := p.Parked(); n != 0 {
		t.Fatalf("parked after the wake-up: %d, want 0", n)
	}
}

func TestParkWakeOnce(t *testing.T) {
	p := newParker(t)
	c, s := pair(t)
	w := newWoken()
	pw, err := p.Park(fdOf(t, s), time.Now().Add(time.Hour), w.wake)
	if err != nil {
		t.Fatal(err)
	}
	if !pw.Wake() {
		t.Fatal("Wake: false for a parked socket")
	}
	w.await(t, "Wake")
	if pw.Wake() {
		t.Fatal("Wake: true for a socket woken already")
	}
	// A byte after the wake-up wakes nothing more: the socket left the set.
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// Park it again and see that wake-up, the only one the byte causes.
	w2 := newWoken()
	if _, err := p.Park(fdOf(t, s), time.Now().Add(time.Hour), w2.wake); err != nil {
		t.Fatal(err)
	}
	w2.await(t, "the byte")
	if n := w.n.Load(); n != 1 {
		t.Fatalf("first wait woken %d times, want 1", n)
	}
}

func TestParkRefusesASocketParkedTwiceAndAfterClose(t *testing.T) {
	p := newParker(t)
	_, s := pair(t)
	fd := fdOf(t, s)
	w := newWoken()
	if _, err := p.Park(fd, time.Now().Add(time.Hour), w.wake); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Park(fd, time.Now().Add(time.Hour), func() {}); err == nil {
		t.Fatal("a socket parked twice: no error")
	}
	p.Close() // wakes what is parked
	w.await(t, "Close")
	if _, err := p.Park(fd, time.Now().Add(time.Hour), func() {}); err != ErrClosed {
		t.Fatalf("Park after Close: %v, want ErrClosed", err)
	}
}

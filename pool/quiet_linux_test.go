package pool

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// GetIdleQuiet hands out an idle connection of the caller's loop that
// quiet vouches for as it is, without the peek, even one its backend
// closed since (the caller then sees EOF and sends its request again);
// one quiet does not vouch for, or of another loop, is peeked and, closed,
// evicted.
func TestGetIdleQuiet(t *testing.T) {
	be := newBackend(t, false)
	dial := func(ctx context.Context, addr string) (*Bare, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		to := be.ln.Addr().(*net.TCPAddr)
		sa := &unix.SockaddrInet4{Port: to.Port}
		copy(sa.Addr[:], to.IP.To4())
		if err := unix.Connect(fd, sa); err != nil {
			_ = unix.Close(fd)
			return nil, err
		}
		return &Bare{FD: fd, Home: 0}, nil
	}
	p := newPool(t, Config{Address: be.addr, MaxConns: 4, DialBare: dial}, nil)
	// closedIdle returns an idle connection whose backend closed it.
	closedIdle := func() *Conn {
		c := get(t, p)
		p.Put(c)
		be.next(t).Close() // a FIN, as a backend's keep-alive timeout sends
		fds := []unix.PollFd{{Fd: int32(c.Bare.FD), Events: unix.POLLRDHUP}}
		if n, err := unix.Poll(fds, 5000); n != 1 || err != nil {
			t.Fatalf("the backend's FIN did not arrive: %d, %v", n, err)
		}
		return c
	}
	c := closedIdle()

	var asked []int
	vouch := func(fd int) bool { asked = append(asked, fd); return true }
	if got := p.GetIdleQuiet(0, vouch); got != c || len(asked) != 1 || asked[0] != c.Bare.FD {
		t.Fatalf("vouched for: got %p (want %p), quiet asked for %v (want [%d])", got, c, asked, c.Bare.FD)
	}
	if !c.Pooled || p.Stats().Pooled != 1 {
		t.Errorf("a connection handed out unpeeked: Pooled %v, stats %+v; want counted as pooled", c.Pooled, p.Stats())
	}
	p.Put(c)

	asked = nil
	if got := p.GetIdleQuiet(1, vouch); got != nil || len(asked) != 0 {
		t.Fatalf("another loop's: got %p, quiet asked for %v; want nil (peeked, evicted), none asked", got, asked)
	}
	if s := p.Stats(); s.Dead != 1 || s.Idle != 0 {
		t.Errorf("after the peek: %+v, want the closed connection evicted as dead", s)
	}

	c = closedIdle()
	asked = nil
	refuse := func(fd int) bool { asked = append(asked, fd); return false }
	if got := p.GetIdleQuiet(0, refuse); got != nil || len(asked) != 1 {
		t.Fatalf("not vouched for: got %p, quiet asked for %v; want nil (peeked, evicted), asked once", got, asked)
	}
	if s := p.Stats(); s.Dead != 2 {
		t.Errorf("after the peek: %+v, want the second closed connection evicted as dead", s)
	}
}

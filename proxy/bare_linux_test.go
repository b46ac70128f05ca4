package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// bareAccept dials ln and accepts the connection bare (acceptFD); the
// client is closed at the test's end, the descriptor is the caller's.
func bareAccept(t *testing.T, ln net.Listener) (client net.Conn, fd int, peer netip.AddrPort) {
	t.Helper()
	w, err := bareWaiter(ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if fd, peer, err = acceptFD(w); err != nil {
		t.Fatal(err)
	}
	return c, fd, peer
}

// fdConn makes a bare descriptor a working *net.TCPConn (a session the
// loops refuse relays on goroutines) and closes the descriptor.
func TestFDConnKeepsTheConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, fd, peer := bareAccept(t, ln)
	if peer.String() != c.LocalAddr().String() {
		t.Errorf("peer %s, want %s", peer, c.LocalAddr())
	}
	tc, err := fdConn(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Close(fd); !errors.Is(err, syscall.EBADF) {
		t.Errorf("the bare descriptor is still open after fdConn (close: %v)", err)
	}
	io.WriteString(c, "over")
	c.(*net.TCPConn).CloseWrite()
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(tc)
	if err != nil || string(got) != "over" {
		t.Errorf("read %q, %v through the connection", got, err)
	}
	tc.Close()
}

// A backend on this host answers the SYN inside connect: dialBare hands
// the connection back without a loop (Home -1) and it carries bytes.
// A connect the kernel has not finished (here refused, the RST after the
// call) goes to a loop, which reports its outcome.
func TestDialBareSkipsTheLoopForAFinishedHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ls, err := engine.NewLoops(1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	bare, err := dialBare(context.Background(), ls, netip.MustParseAddrPort(ln.Addr().String()), false)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(bare.FD)
	if bare.Home != -1 {
		t.Errorf("a handshake finished inside connect is watched by loop %d, want none (-1)", bare.Home)
	}
	if !bare.Local.IsValid() || bare.Peer.String() != ln.Addr().String() {
		t.Errorf("addresses %s → %s, want a local one → %s", bare.Local, bare.Peer, ln.Addr())
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := unix.Write(bare.FD, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 5)
	if _, err := io.ReadFull(srv, got); err != nil || string(got) != "hello" {
		t.Errorf("the backend read %q, %v", got, err)
	}

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	to := netip.MustParseAddrPort(closed.Addr().String())
	closed.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if b, err := dialBare(ctx, ls, to, false); !errors.Is(err, syscall.ECONNREFUSED) {
		if b != nil {
			unix.Close(b.FD)
		}
		t.Errorf("dial a closed port: %v, want connection refused", err)
	}
}

// dialErrs is an Observer that keeps the error of every backend dial.
type dialErrs struct {
	nopObserver
	mu   sync.Mutex
	errs []error
}

func (d *dialErrs) Dialed(_ string, _ time.Duration, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.errs = append(d.errs, err)
}

// A bare dial that runs out of connect_timeout (a backend whose accept
// queue is full drops the SYN) is a dial failure the Observer sees, with
// the deadline as its error: only a dial that was never to wait (DialNow)
// goes unobserved when it gives up.
func TestBareDialTimeoutIsObserved(t *testing.T) {
	full, _ := loopback.FullQueue(t)
	be := full.String()
	obs := &dialErrs{}
	h := startProxyWith(t, config.Listener{Close: testClose(policy.TargetPeer, policy.FallbackFIN)},
		config.Backend{Address: be, ConnectTimeout: 200 * time.Millisecond, Close: testClose(policy.TargetProxy, policy.FallbackReset)},
		[]Option{WithObserver(obs)}, relayLoop)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if td := h.record(t); td.Outcome == engine.OutcomeOK {
		t.Errorf("a session whose backend never answered: outcome %s", td.Outcome)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.errs) == 0 || !errors.Is(obs.errs[0], context.DeadlineExceeded) {
		t.Errorf("dials observed: %v; want one failed by its deadline", obs.errs)
	}
}

// A direct dial from a source (source = "client") binds it transparently
// and leaves the port to the connect, on sockets of either family: an
// IPv4 address not this host's own (on loopback every 127/8 address is
// local, so answers come back), and ::1.
func TestDialDirectFromASource(t *testing.T) {
	if ok, _ := hasNetAdmin(); !ok {
		t.Skip("needs CAP_NET_ADMIN for IP_TRANSPARENT (run as root, as CI does)")
	}
	for _, tc := range []struct{ network, listen, from string }{
		{"tcp4", "127.0.0.1:0", "127.0.0.58"},
		{"tcp6", "[::1]:0", "::1"},
	} {
		ln, err := net.Listen(tc.network, tc.listen)
		if err != nil {
			t.Logf("%s: skipped: %v", tc.network, err)
			continue
		}
		peers := make(chan netip.AddrPort, 1)
		to := netip.MustParseAddrPort(loopback.ServeOn(t, ln.(*net.TCPListener), func(c *net.TCPConn) {
			peers <- addrPort(c.RemoteAddr())
			c.Close()
		}))
		from := netip.MustParseAddr(tc.from)
		c, err := dialDirect(t.Context(), to, from, false)
		if err != nil {
			t.Fatalf("%s: dialDirect from %s: %v", tc.network, from, err)
		}
		local := addrPort(c.LocalAddr())
		c.Close()
		if peer := <-peers; peer.Addr() != from || local != peer || peer.Port() == 0 {
			t.Errorf("%s: backend saw %s, the socket's own is %s; want one from %s", tc.network, peer, local, from)
		}
	}
}

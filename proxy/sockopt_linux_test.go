package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// TestAcceptedConnsInheritKeepAlive: keep-alive and TCP_NODELAY are set
// on the listening socket only, and every accepted socket carries Go's
// defaults all the same: one Go accepts, and a bare one (acceptFD, which
// sets nothing itself).
func TestAcceptedConnsInheritKeepAlive(t *testing.T) {
	lc := listenConfig(config.InterceptOff)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, srv := loopback.Pair(t, ln.(*net.TCPListener))
	defer client.Close()
	defer srv.Close()
	checkInherited(t, "accepted socket", func(f func(fd int)) error { return control(srv, f) })

	_, fd, _ := bareAccept(t, ln)
	defer unix.Close(fd)
	checkInherited(t, "bare accepted socket", func(f func(fd int)) error { f(fd); return nil })
}

func checkInherited(t *testing.T, what string, control func(func(fd int)) error) {
	t.Helper()
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
	} {
		var got int
		var opErr error
		if err := control(func(fd int) { got, opErr = unix.GetsockoptInt(fd, o.level, o.opt) }); err != nil || opErr != nil {
			t.Fatalf("%s: %v %v", o.name, err, opErr)
		}
		if got != o.want {
			t.Errorf("%s: %s = %d, want %d", what, o.name, got, o.want)
		}
	}
}

// Backend connections have keep-alive only with backend.tcp_keepalive,
// then Go's defaults: dialed by Go's dialer and dialed bare alike.
func TestBackendKeepAliveIsOptIn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ls, err := engine.NewLoops(1, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	to := netip.MustParseAddrPort(ln.Addr().String())
	s := &Server{obs: nopObserver{}, log: zap.NewNop()}
	for _, on := range []bool{false, true} {
		want := map[bool]int{false: 0, true: 1}[on]
		b := config.Backend{Name: "app", Address: to.String(), Protocol: config.ProtocolTCP, TCPKeepAlive: on}
		c, err := s.dialer(b, nil)(context.Background(), to.String())
		if err != nil {
			t.Fatal(err)
		}
		checkKeepAlive(t, fmt.Sprintf("tcp_keepalive = %v, Go's dialer", on), want,
			func(f func(fd int)) error { return control(c, f) })
		c.Close()
		bare, err := dialBare(context.Background(), ls, to, on)
		if err != nil {
			t.Fatal(err)
		}
		checkKeepAlive(t, fmt.Sprintf("tcp_keepalive = %v, bare", on), want,
			func(f func(fd int)) error { f(bare.FD); return nil })
		unix.Close(bare.FD)
	}
}

func checkKeepAlive(t *testing.T, what string, want int, control func(func(fd int)) error) {
	t.Helper()
	var got, idle int
	var opErr error
	if err := control(func(fd int) {
		if got, opErr = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE); opErr == nil && want == 1 {
			idle, opErr = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		}
	}); err != nil || opErr != nil {
		t.Fatalf("%s: %v %v", what, err, opErr)
	}
	if got != want || want == 1 && idle != 15 {
		t.Errorf("%s: SO_KEEPALIVE %d (TCP_KEEPIDLE %d), want %d (15)", what, got, idle, want)
	}
}

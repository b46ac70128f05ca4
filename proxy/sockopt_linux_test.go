package proxy

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"

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

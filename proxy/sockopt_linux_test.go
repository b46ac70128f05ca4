package proxy

import (
	"context"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/config"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// TestAcceptedConnsInheritKeepAlive: keep-alive is set on the listening
// socket only, and every accepted socket carries Go's defaults all the
// same (and TCP_NODELAY).
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
		if err := control(srv, func(fd int) { got, opErr = unix.GetsockoptInt(fd, o.level, o.opt) }); err != nil || opErr != nil {
			t.Fatalf("%s: %v %v", o.name, err, opErr)
		}
		if got != o.want {
			t.Errorf("accepted socket: %s = %d, want %d", o.name, got, o.want)
		}
	}
}

package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// awaitRead waits until the proxy has read every byte written on c: c's
// send queue is empty (the proxy's kernel has them all), then so is the
// receive queue of c's peer, the proxy's socket (in that order: bytes
// still on their way are in neither). No read of the proxy's then takes
// in what c sends next with what came before; a pause would not promise
// that of a proxy that reads late. A gone socket ends the wait: the
// proxy will read nothing more.
func awaitRead(t *testing.T, c net.Conn) {
	t.Helper()
	local, peer := loopback.AddrPort(c.LocalAddr()), loopback.AddrPort(c.RemoteAddr())
	waitFor(t, 5*time.Second, "the proxy reads all that was sent", func() bool {
		mine, ok, err := sockdiag.Find(local, peer)
		if err != nil {
			t.Fatal(err)
		}
		if !ok || mine.Unacked > 0 {
			return !ok
		}
		proxys, ok, err := sockdiag.Find(peer, local)
		if err != nil {
			t.Fatal(err)
		}
		return !ok || proxys.Unread == 0
	})
}

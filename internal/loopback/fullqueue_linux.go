package loopback

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// FullQueue listens on 127.0.0.1 with an accept queue it fills and never
// accepts from: the kernel drops every further SYN, so a connect to addr
// is still under way when its caller gives up. closeAll closes the
// queued connections and the listener (also when t ends), for a test
// that counts descriptors.
func FullQueue(t testing.TB) (addr netip.AddrPort, closeAll func()) {
	t.Helper()
	full, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var queued []net.Conn
	var once sync.Once
	closeAll = func() {
		once.Do(func() {
			for _, c := range queued {
				c.Close()
			}
			unix.Close(full)
		})
	}
	t.Cleanup(closeAll)
	if err := unix.Bind(full, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(full, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(full)
	if err != nil {
		t.Fatal(err)
	}
	addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	for len(queued) < 8 { // fills the queue (its length is the backlog + 1)
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		if err != nil {
			break
		}
		queued = append(queued, c)
	}
	return addr, closeAll
}

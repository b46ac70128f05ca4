package loopback

import (
	"fmt"
	"net"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace of its own, with lo up, entered by one
// locked OS thread: sockets made by functions Do runs live there, so a
// test may fill its TIME-WAIT table without touching the host's. When t
// ends, the thread exits still locked, which ends the thread and with it
// the namespace and every socket left in it.
type Netns struct {
	do chan func()
}

// NewNetns makes the namespace, or skips t where that needs privileges it
// lacks.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	n := &Netns{do: make(chan func())}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the namespace
		err := unix.Unshare(unix.CLONE_NEWNET)
		if err == nil {
			err = loUp()
		}
		ready <- err
		if err != nil {
			return
		}
		for f := range n.do {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Skipf("a network namespace of its own: %v", err)
	}
	t.Cleanup(func() { close(n.do) })
	return n
}

// Do runs f on the namespace's thread and waits for it.
func (n *Netns) Do(f func()) {
	done := make(chan struct{})
	n.do <- func() { defer close(done); f() }
	<-done
}

// loUp brings lo up in the calling thread's namespace.
func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// LeaveTimeWaits leaves n TIME-WAIT sockets on ln's port: it dials ln and
// the accepted side closes first, n times, each in TIME-WAIT when it
// returns (closeInOrder). It takes no testing.TB, so
// that it can run on a Netns's thread. A client port that comes round
// again toward the same listener ends the TIME-WAIT it meets there: past
// a few thousand, spread the sockets over several listeners.
func LeaveTimeWaits(ln net.Listener, n int) error {
	for i := range n {
		if err := serverCloses(ln); err != nil {
			return fmt.Errorf("connection %d of %d: %w", i+1, n, err)
		}
	}
	return nil
}

func serverCloses(ln net.Listener) error {
	c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
	if err != nil {
		return err
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		return err
	}
	return closeInOrder(s, c)
}

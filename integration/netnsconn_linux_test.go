package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test process itself can open sockets inside a topology's namespaces:
// a socket belongs to the namespace it was created in, for its whole life,
// whichever thread uses it afterwards. So a goroutine locks its thread,
// enters the namespace, creates the socket, goes back to its own namespace
// and only then unlocks the thread. (Since Go 1.10 the runtime starts new
// threads from a clean template thread, so none inherit the namespace.)
//
// The thread must survive: the harness starts its children with Pdeathsig,
// which fires when the *thread* that forked a child exits, and a locked
// thread left locked exits with its goroutine. Only if the way back fails
// is the thread left locked, to die rather than run other code in the
// wrong namespace.

// inNetns runs fn on a thread inside namespace ns.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := enterNetns(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if rerr := unix.Setns(int(back.Fd()), unix.CLONE_NEWNET); rerr != nil {
			back.Close()
			errc <- errors.Join(err, fmt.Errorf("return from namespace %s: %w", ns, os.NewSyscallError("setns", rerr)))
			return // the thread stays locked and exits with this goroutine
		}
		back.Close()
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// enterNetns moves the calling (locked) thread into ns and returns its
// previous namespace.
func enterNetns(ns string) (*os.File, error) {
	back, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("open own namespace: %w", err)
	}
	f, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		back.Close()
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		back.Close()
		return nil, fmt.Errorf("enter namespace %s: %w", ns, os.NewSyscallError("setns", err))
	}
	return back, nil
}

// dialFrom connects from namespace ns to addr. Cleanup closes the
// connection.
func dialFrom(t testing.TB, ns, addr string) (*net.TCPConn, error) {
	t.Helper()
	var c net.Conn
	err := inNetns(ns, func() error {
		var err error
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s from %s: %w", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), nil
}

// listenIn listens on addr inside namespace ns. Cleanup closes the
// listener.
func listenIn(t testing.TB, ns, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	err := inNetns(ns, func() error {
		var err error
		ln, err = new(net.ListenConfig).Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

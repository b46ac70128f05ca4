//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/procnet"
)

// netns is a network namespace the bench made for one candidate: its own
// loopback, ephemeral ports and TIME-WAIT sockets, so that no candidate
// pays for another's (each short-connection load leaves tens of
// thousands of TIME-WAIT sockets for 60 s, and every connect searches
// the ephemeral ports among them). nil is the bench's own namespace.
type netns struct {
	name string
	pid  int // a process inside (its backend), whose /proc/PID/net is the namespace's
}

// newNetns makes the namespace name with its loopback up.
func newNetns(name string) (*netns, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	n := &netns{name: name}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.remove()
		return nil, fmt.Errorf("ip -n %s link set lo up: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return n, nil
}

// remove deletes the namespace, by its name; stop its processes first.
func (n *netns) remove() {
	if n != nil {
		_ = exec.Command("ip", "netns", "del", n.name).Run()
	}
}

// wrap makes argv run inside the namespace (ip netns exec execs: the PID
// is the command's).
func (n *netns) wrap(argv ...string) []string {
	if n == nil {
		return argv
	}
	return append([]string{"ip", "netns", "exec", n.name}, argv...)
}

// command is exec.CommandContext of name and args inside the namespace.
func (n *netns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := n.wrap(append([]string{name}, args...)...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// dial connects to addr from inside the namespace. A socket belongs to
// the namespace of the thread that made it, and keeps it.
func (n *netns) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	if n == nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	var c net.Conn
	err := n.do(func() (err error) {
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// do runs f on a thread moved into the namespace, and moves the thread
// back. A thread that could not be moved back is never used again: it
// stays locked to this goroutine and ends with it.
func (n *netns) do(f func() error) error {
	runtime.LockOSThread()
	home, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer home.Close()
	ns, err := os.Open("/run/netns/" + n.name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", n.name, err)
	}
	ferr := f()
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		return errors.Join(ferr, fmt.Errorf("setns back from %s: %w", n.name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// timeWait is the namespace's TIME-WAIT sockets (the bench's own for nil).
func (n *netns) timeWait() (int, error) {
	if n == nil || n.pid == 0 {
		return procnet.ReadTimeWait()
	}
	return procnet.ReadTimeWaitOf(n.pid)
}

// canIsolate says whether the bench may make network namespaces: as root,
// with ip(8).
func canIsolate() bool {
	_, err := exec.LookPath("ip")
	return os.Geteuid() == 0 && err == nil
}

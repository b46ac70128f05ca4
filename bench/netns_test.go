//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// A namespace the bench makes holds what its processes and dials do
// there, and is gone once removed: a listener made on a thread moved into
// it is reached by its dial and seen by a command it wraps, and its
// TIME-WAIT count is read through a process inside.
func TestNetns(t *testing.T) {
	if !canIsolate() {
		t.Skip("needs root and ip(8)")
	}
	n, err := newNetns(fmt.Sprintf("cpbenchtest%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer n.remove()
	var ln net.Listener
	if err := n.do(func() (err error) { ln, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := n.dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatalf("dial inside: %v", err)
	}
	c.Close()
	out, err := n.command(ctx, "ss", "-Htln").CombinedOutput()
	if err != nil || !strings.Contains(string(out), ln.Addr().String()) {
		t.Errorf("ss -Htln in %s: %v\n%s\nwant the listener %s", n.name, err, out, ln.Addr())
	}
	sleeper := n.command(ctx, "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
	n.pid = sleeper.Process.Pid
	if _, err := n.timeWait(); err != nil {
		t.Errorf("TIME-WAIT count through PID %d: %v", n.pid, err)
	}
	_ = sleeper.Process.Kill()
	_ = sleeper.Wait()
	ln.Close()
	n.remove()
	if _, err := os.Stat("/run/netns/" + n.name); !os.IsNotExist(err) {
		t.Errorf("namespace %s still there after remove: %v", n.name, err)
	}
}

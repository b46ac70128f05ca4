package main

import (
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// closeproxy run with its records and log on stderr (the default), read
// by a pipe whose reader goes away: the next records' writes fail, and
// the proxy goes on serving; it does not die of SIGPIPE.
func TestLostStderrReader(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	port := freePort(t)
	path := writeConfig(t, daemonConfig(port, backend, ""))
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "run", "-config", path)
	cmd.Env = append(os.Environ(), "CLOSEPROXY_TEST_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // the process this test started, by its PID
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	// Its first lines, then the reader goes.
	if _, err := io.ReadFull(stderr, make([]byte, 64)); err != nil {
		t.Fatalf("closeproxy's first log lines: %v", err)
	}
	stderr.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	for i := range 3 { // each ends with a record on stderr, now unread
		if err := echoThrough(addr); err != nil {
			t.Fatalf("session %d after stderr's reader went away: %v", i, err)
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("closeproxy exited once stderr's reader went away: %v", err)
	default:
	}
}

// echoThrough sends a line through the proxy at addr to an echo backend
// and reads it back, with a deadline.
func echoThrough(addr string) error {
	var c net.Conn
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	return nil
}

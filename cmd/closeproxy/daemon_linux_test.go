package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	_, stderr, exited := startMain(t, path)
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
		exited <- err // for the cleanup
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

// Records to a pipe whose reader stopped taking them (open, never read):
// once the pipe is full, ended sessions wait to write theirs. SIGTERM
// still ends the process within shutdown's bound and recordsWait, exit
// 1, where it waited for the reader for good.
func TestShutdownBoundedWithRecordsStuck(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	port := freePort(t)
	fifo := filepath.Join(t.TempDir(), "records")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	reader, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0) // open, never read
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	text := strings.Replace(daemonConfig(port, backend, "records = \""+fifo+"\"\nrecords_flush = \"0s\""), `shutdown_timeout = "2s"`, `shutdown_timeout = "1s"`, 1)
	path := writeConfig(t, text)
	cmd, stderr, exited := startMain(t, path)
	go io.Copy(io.Discard, stderr) // the log is read
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	for i := range 200 { // records of about 1 KB: more than the pipe's 64 KiB
		if err := echoThrough(addr); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("closeproxy exited %v after %v, want exit 1: it gave up on the records", err, time.Since(start))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("closeproxy still running 30s after SIGTERM with its records sink stuck")
	}
}

// startMain runs the test binary as `closeproxy run -config path` (see
// TestMain) with its stderr on a pipe, and ends it when the test ends
// (SIGTERM, then a kill after 10 s: the process this test started, by
// its PID). exited receives Wait's error; a test that takes it puts it
// back for the cleanup.
func startMain(t *testing.T, path string) (*exec.Cmd, io.ReadCloser, chan error) {
	t.Helper()
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
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			exited <- err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	return cmd, stderr, exited
}

// The signals themselves: a second SIGTERM during shutdown ends the wait
// for the session still open (shutdown_timeout 1h), exit 0.
func TestSecondSIGTERM(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	port := freePort(t)
	path := writeConfig(t, strings.Replace(daemonConfig(port, backend, ""), `shutdown_timeout = "2s"`, `shutdown_timeout = "1h"`, 1))
	cmd, stderr, exited := startMain(t, path)
	lines := bufio.NewScanner(stderr)
	waitFor := func(msg string) {
		t.Helper()
		for lines.Scan() {
			if strings.Contains(lines.Text(), `"msg":"`+msg+`"`) {
				return
			}
		}
		t.Fatalf("closeproxy's stderr ended before %q: %v", msg, lines.Err())
	}
	waitFor("listening")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatalf("the echo through the proxy: %v", err)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitFor("shutting down")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	waitFor("signalled again: the sessions left end now, as at the end of shutdown_timeout")
	go io.Copy(io.Discard, stderr)
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("closeproxy exited %v after a second SIGTERM, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("closeproxy still running 15 s after a second SIGTERM (shutdown_timeout 1h)")
	}
}

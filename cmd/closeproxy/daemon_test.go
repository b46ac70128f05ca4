package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
)

// syncBuffer is a bytes.Buffer the daemon's goroutines may write to while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// logLine is one JSON line of the log or the records.
type logLine map[string]any

func (l logLine) str(key string) string { s, _ := l[key].(string); return s }

// jsonLines parses every line of text; a line that is not JSON fails t.
func jsonLines(t testing.TB, text string) []logLine {
	t.Helper()
	var out []logLine
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if line == "" {
			continue
		}
		var l logLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("not a JSON line: %q: %v", line, err)
		}
		out = append(out, l)
	}
	return out
}

// withMsg returns the lines whose msg is msg.
func withMsg(lines []logLine, msg string) []logLine {
	var out []logLine
	for _, l := range lines {
		if l.str("msg") == msg {
			out = append(out, l)
		}
	}
	return out
}

// daemonRun is a daemon serving on loopback for one test.
type daemonRun struct {
	path           string
	stdout, stderr *syncBuffer
	hup, usr1      chan os.Signal
	again          chan struct{} // close: a second SIGTERM
	port           uint16
	stop           func() // ends the daemon (SIGTERM) and waits for it; later calls do nothing
}

// daemonConfig is a configuration with one listener on port toward backend,
// the admin listener off, and extra appended (more [log] keys, say).
func daemonConfig(port uint16, backend, logKeys string) string {
	return fmt.Sprintf("shutdown_timeout = \"2s\"\n[log]\n%s\n[admin]\nlisten = \"off\"\n"+
		"[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:%d\"\nbackend = \"app\"\n"+
		"[[backend]]\nname = \"app\"\naddress = %q\n[backend.pool]\nwarm = 1\n", logKeys, port, backend)
}

// startDaemon runs daemon on the configuration text until the test ends,
// and waits for its "listening" line.
func startDaemon(t *testing.T, text func(port uint16) string) *daemonRun {
	t.Helper()
	d := &daemonRun{port: freePort(t), stdout: &syncBuffer{}, stderr: &syncBuffer{},
		hup: make(chan os.Signal, 1), usr1: make(chan os.Signal, 1), again: make(chan struct{})}
	d.path = writeConfig(t, text(d.port))
	cfg, err := config.Load(d.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- daemon(ctx, d.path, cfg, d.stdout, d.stderr, signals{hup: d.hup, usr1: d.usr1, again: d.again})
	}()
	d.stop = sync.OnceFunc(func() {
		cancel()
		if c := <-code; c != 0 {
			t.Errorf("daemon exited %d:\n%s", c, d.stderr)
		}
	})
	t.Cleanup(d.stop)
	// The daemon logs nothing we can wait on when log.level is warn: dial
	// until the listener answers, with a deadline.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c, err := net.Dial("tcp", d.addr())
		if err == nil {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's listener never answered: %v\n%s", err, d.stderr)
		}
	}
	return d
}

func (d *daemonRun) addr() string { return fmt.Sprintf("127.0.0.1:%d", d.port) }

// session sends msg through the proxy, half-closes and reads the echo.
func (d *daemonRun) session(t testing.TB, msg string) {
	t.Helper()
	loopback.EchoThrough(t, d.addr(), msg)
}

// waitLines polls out until pick finds at least n lines in it: records are
// written after the client saw its EOF, so nothing else says when.
func waitLines(t testing.TB, what string, out func() string, pick func([]logLine) []logLine, n int) []logLine {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := pick(jsonLines(t, out()))
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d %s after 5s:\n%s", len(got), n, what, out())
		}
	}
}

func records(lines []logLine) []logLine { return withMsg(lines, "teardown") }

// The "listening" line names the admin address actually bound (port 0
// picks one), and the admin endpoints there report each reload: a refused
// one turns closeproxy_config_last_reload_successful to 0, the next good
// one back to 1.
func TestListeningNamesTheBoundAdminAddress(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	text := func(p uint16) string {
		return strings.Replace(daemonConfig(p, backend, ""), `listen = "off"`, `listen = "127.0.0.1:0"`, 1)
	}
	d := startDaemon(t, text)
	lines := waitLines(t, "listening line", d.stderr.String, func(l []logLine) []logLine { return withMsg(l, "listening") }, 1)
	admin := lines[0].str("admin")
	if ap, err := netip.ParseAddrPort(admin); err != nil || ap.Port() == 0 {
		t.Fatalf("listening line names admin %q, want the bound address", admin)
	}
	reloadOK := func() string {
		t.Helper()
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "closeproxy_config_last_reload_successful "); ok {
				return v
			}
		}
		t.Fatalf("no closeproxy_config_last_reload_successful at %s", admin)
		return ""
	}
	if v := reloadOK(); v != "1" {
		t.Errorf("at start: last reload successful %s, want 1", v)
	}
	reloads := func(msg string, n int) {
		waitLines(t, msg, d.stderr.String, func(l []logLine) []logLine { return withMsg(l, msg) }, n)
	}
	if err := os.WriteFile(d.path, []byte("[[listener]]\nnope = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.hup <- syscall.SIGHUP
	reloads("reload refused; the running configuration stays", 1)
	if v := reloadOK(); v != "0" {
		t.Errorf("after a refused reload: last reload successful %s, want 0", v)
	}
	if err := os.WriteFile(d.path, []byte(text(d.port)), 0o600); err != nil {
		t.Fatal(err)
	}
	d.hup <- syscall.SIGHUP
	reloads("configuration reloaded", 1)
	if v := reloadOK(); v != "1" {
		t.Errorf("after a good reload: last reload successful %s, want 1", v)
	}
}

// A second SIGTERM or SIGINT ends shutdown's wait for sessions: the ones
// left end as at the end of shutdown_timeout (cut, outcome drained) and
// the process exits, where it used to ignore the signal and wait the
// whole timeout (an operator's second Ctrl-C did nothing).
func TestSecondSignalEndsShutdownsWait(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	d := startDaemon(t, func(p uint16) string {
		return strings.Replace(daemonConfig(p, backend, ""), `shutdown_timeout = "2s"`, `shutdown_timeout = "1h"`, 1)
	})
	c, err := net.Dial("tcp", d.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatalf("the echo through the proxy: %v", err)
	}
	stopped := make(chan struct{})
	go func() { d.stop(); close(stopped) }()
	waitLines(t, "shutting down line", d.stderr.String, func(l []logLine) []logLine { return withMsg(l, "shutting down") }, 1)
	select {
	case <-stopped:
		t.Fatal("the daemon stopped with a session open, before its shutdown_timeout of 1h or a second signal")
	default:
	}
	close(d.again)
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15 s after the second signal (shutdown_timeout 1h):\n%s", d.stderr)
	}
	recs := sessions(jsonLines(t, d.stderr.String()))
	if len(recs) != 1 || recs[0].str("outcome") != "drained" {
		t.Errorf("records %v, want the one session's, outcome drained", recs)
	}
}

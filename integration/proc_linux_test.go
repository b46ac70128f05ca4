package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stopTimeout is how long Stop waits after SIGTERM before SIGKILL.
const stopTimeout = 10 * time.Second

// Proc is a background process the test started. Cleanup stops it by PID
// (SIGTERM, then SIGKILL) and waits for it; a process that exits on its own
// before the test stops it fails the test, with its output.
type Proc struct {
	Name string

	cmd     *exec.Cmd
	out     *syncBuffer // stdout and stderr, unless the caller set them
	done    chan struct{}
	waitErr error // valid once done is closed

	mu       sync.Mutex
	stopping bool // exit is expected: Stop or Wait was called
}

// Start runs args in namespace ns in the background.
func (topo *Topology) Start(t testing.TB, ns string, args ...string) *Proc {
	t.Helper()
	return startCmd(t, args[0]+"@"+ns, topo.Cmd(ns, args...))
}

// startCmd starts cmd and registers its stop. Stdout and stderr go to the
// Proc's buffer, and also to cmd's own Stdout and Stderr when set.
func startCmd(t testing.TB, name string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = tee(p.out, cmd.Stdout)
	cmd.Stderr = tee(p.out, cmd.Stderr)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go p.wait()
	t.Cleanup(func() {
		p.mu.Lock()
		expected := p.stopping
		p.mu.Unlock()
		select {
		case <-p.done:
			if !expected {
				t.Errorf("%s (pid %d) exited before the test ended: %v\n%s", p.Name, p.Pid(), p.waitErr, p.Output())
			}
		default:
		}
		p.Stop(t)
	})
	return p
}

func tee(w, also io.Writer) io.Writer {
	if also == nil {
		return w
	}
	return io.MultiWriter(w, also)
}

func (p *Proc) wait() {
	p.waitErr = p.cmd.Wait()
	close(p.done)
}

// Pid is the process's PID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is what the process wrote so far to the Proc's buffer.
func (p *Proc) Output() string { return p.out.String() }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process, by PID, unless it already ended.
func (p *Proc) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if p.Exited() {
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Errorf("signal %s to %s: %v", sig, p.Name, err)
	}
}

// Wait expects the process to end within timeout and returns how it ended.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	p.expectExit()
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(timeout):
		t.Fatalf("%s (pid %d) still running after %v", p.Name, p.Pid(), timeout)
		return nil
	}
}

// Stop sends SIGTERM, waits up to stopTimeout, then sends SIGKILL and waits.
// It returns how the process ended; calling it again is harmless.
func (p *Proc) Stop(t testing.TB) error {
	t.Helper()
	p.expectExit()
	p.Signal(t, syscall.SIGTERM)
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(stopTimeout):
	}
	t.Errorf("%s (pid %d) ignored SIGTERM for %v; killing it", p.Name, p.Pid(), stopTimeout)
	p.Signal(t, syscall.SIGKILL)
	<-p.done
	return p.waitErr
}

func (p *Proc) expectExit() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
}

// waitListening waits until a TCP socket listens on addr inside namespace
// ns (a wildcard listener on addr's port counts), failing early if p ends.
//
// Polling the kernel is the only way to learn this from outside the
// process. It asks `ss` for LISTEN sockets rather than connecting: a probe
// connection would leave a TIME-WAIT socket and a log line or teardown
// record behind, and those are exactly what the tests count.
func waitListening(t testing.TB, topo *Topology, ns string, addr netip.AddrPort, p *Proc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := topo.run(ns, "ss", "-Hltn", "sport", "=", ":"+strconv.Itoa(int(addr.Port())))
		if err == nil && listensOn(out, addr) {
			return
		}
		if p != nil && p.Exited() {
			t.Fatalf("%s exited before listening on %s: %v\n%s", p.Name, addr, p.waitErr, p.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s in %s after 10s (ss: %v %s)", addr, ns, err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listensOn reports whether `ss -Hltn` output shows a listener for addr.
func listensOn(ssOut string, addr netip.AddrPort) bool {
	for _, line := range strings.Split(ssOut, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		local := f[3]
		if local == fmt.Sprintf("*:%d", addr.Port()) {
			return true
		}
		ap, err := netip.ParseAddrPort(local)
		if err == nil && ap.Port() == addr.Port() && (ap.Addr() == addr.Addr() || ap.Addr().IsUnspecified()) {
			return true
		}
	}
	return false
}

// syncBuffer is a bytes.Buffer safe for the process's writer goroutines and
// the test reading it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

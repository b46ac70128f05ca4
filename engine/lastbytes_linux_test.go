package engine

import (
	"crypto/sha256"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// The backend's last bytes and its FIN arrive in one segment; the proxy
// answers that EOF with its FIN toward the client (target proxy). On the
// loops bytes as few as heldMax wait in the kernel for that FIN
// (MSG_MORE) and reach the client with it: the client's kernel counts two
// segments received, the SYN-ACK and bytes with FIN, where a write then a
// FIN would be three. More go at once, the FIN after them. Each stream
// is whole (SHA-256) and the record says the proxy's FIN came first.
func TestLoopsFINRidesTheLastBytes(t *testing.T) {
	if !onLoops {
		t.Skip("the goroutine relay writes every byte at once; set CLOSEPROXY_TEST_RELAY=loop")
	}
	for _, c := range []struct{ n, segs int }{{heldMax, 2}, {heldMax + 1, 3}} {
		ends := policyClose(policy.TargetProxy, policy.FallbackFIN)
		r := relay(t, ends, ends, 5*time.Second)

		answer, sum := payload(c.n, 7)
		sendWithFIN(t, r.backend, answer)
		_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got := readAll(r.client); got.err != nil || got.sum != sum {
			t.Fatalf("%d bytes: client read %d (%v); want them by SHA-256, then EOF", c.n, got.n, got.err)
		}
		if in := tcpInfo(t, r.client).Segs_in; int(in) != c.segs {
			t.Errorf("%d bytes: client received %d segments; want %d", c.n, in, c.segs)
		}
		_ = r.client.Close()
		td := r.wait(t, 5*time.Second)
		if td.Outcome != OutcomeOK || td.Front.FirstFIN != policy.SideProxy {
			t.Errorf("%d bytes: record %s (%v), front first_fin %s; want ok, proxy", c.n, td.Outcome, td.Err, td.Front.FirstFIN)
		}
	}
}

// Where the proxy withholds its FIN (target peer: the client is to
// close first), the last bytes before the backend's EOF must not wait for
// it: the client reads them while its end is still open (no FIN in), and
// closes; the proxy's FIN follows.
func TestLoopsLastBytesGoOutWhenTheFINIsWithheld(t *testing.T) {
	front := policyClose(policy.TargetPeer, policy.FallbackFIN)
	front.PeerFinGrace = 10 * time.Second // longer than the test: the client's close ends the wait
	r := relay(t, front, policyClose(policy.TargetProxy, policy.FallbackFIN), 20*time.Second)

	sendWithFIN(t, r.backend, []byte("answer"))
	_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, err := io.ReadAtLeast(r.client, buf, len("answer"))
	if err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("client read %q, %v; want answer", buf[:n], err)
	}
	if s := tcpInfo(t, r.client).State; s != unix.BPF_TCP_ESTABLISHED {
		t.Fatalf("client's end in state %d with the answer read; want established: the answer waited for the proxy's FIN", s)
	}
	_ = r.client.CloseWrite()
	if rest, err := io.ReadAll(r.client); err != nil || len(rest) != 0 {
		t.Fatalf("after its FIN the client read %q, %v; want EOF", rest, err)
	}
	_ = r.client.Close()
	td := r.wait(t, 5*time.Second)
	if td.Outcome != OutcomeOK || td.Front.FirstFIN != policy.SideClient {
		t.Errorf("record %s (%v), front first_fin %s; want ok, client", td.Outcome, td.Err, td.Front.FirstFIN)
	}
}

// sendWithFIN sends b and c's FIN in one segment: b held (MSG_MORE) until
// the shutdown takes it along.
func sendWithFIN(t *testing.T, c *net.TCPConn, b []byte) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Sendto(int(fd), b, unix.MSG_MORE, nil) }); err != nil || serr != nil {
		t.Fatalf("send %q with MSG_MORE: %v, %v", b, err, serr)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// tcpInfo reads c's TCP_INFO.
func tcpInfo(t *testing.T, c *net.TCPConn) *unix.TCPInfo {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || ierr != nil {
		t.Fatalf("TCP_INFO: %v, %v", err, ierr)
	}
	return info
}

// lastTask writes "answer" with WriteLast at its first edge, then ends
// its leg at once (end) or, like echoTask, when the client's FIN comes.
type lastTask struct {
	echoTask
	end   bool
	wrote bool
}

func (l *lastTask) Ready(s *TaskSock) {
	if l.sock == nil || l.wrote {
		l.echoTask.Ready(s)
		return
	}
	l.wrote = true
	if _, err := l.sock.WriteLast([]byte("answer")); err != nil {
		panic(err)
	}
	if l.end {
		l.rn.End(l.s, policy.Front, l.sock, Ending{}, 0, func() { close(l.ended) })
		l.sock = nil
		l.rn.Done()
	}
}

// A task's last bytes (TaskSock.WriteLast) ride the FIN of the End that
// follows (two segments reach the client: SYN-ACK, then bytes with FIN).
// Where the policy withholds that FIN, or the task does not end the leg,
// the loop pushes them out as its turn ends: the client reads them
// with its end still open, closes, and the proxy's FIN follows.
//
// Left held, the kernel would still send them, but only when its probe
// timer fires (TCP_RTO_MIN, 200 ms, at the earliest): the test asks for
// them sooner than that, in one of three sessions, so that a busy host's
// one late turn fails nothing.
func TestTaskLastBytes(t *testing.T) {
	const probeTimer = 200 * time.Millisecond
	for _, c := range []struct {
		name   string
		target policy.Target
		end    bool
		first  policy.Side
	}{
		{"ended with a FIN at once", policy.TargetProxy, true, policy.SideProxy},
		{"ended, the FIN withheld for the client's", policy.TargetPeer, true, policy.SideClient},
		{"not ended", policy.TargetPeer, false, policy.SideClient},
	} {
		t.Run(c.name, func(t *testing.T) {
			var took []time.Duration
			for range 3 {
				d := lastBytesSession(t, c.target, c.end, c.first)
				if took = append(took, d); d < probeTimer*3/4 {
					return
				}
			}
			t.Errorf("the answer took %v to reach the client; want less than %v once: it waited for the kernel's probe timer", took, probeTimer*3/4)
		})
	}
}

// lastBytesSession runs one lastTask session and returns how long its
// answer took to reach the client.
func lastBytesSession(t *testing.T, target policy.Target, end bool, first policy.Side) time.Duration {
	t.Helper()
	ls := oneLoop(t)
	client, front, err := bareFront(loopback.Listener(t))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	rec := NewRecorder(1, "web", "app", target, target)
	pol := policyClose(target, policy.FallbackFIN)
	pol.PeerFinGrace = 10 * time.Second // longer than the test: the client's FIN ends a wait
	task := &lastTask{echoTask: echoTask{s: &Session{Rec: rec, Front: pol},
		crashed: make(chan any, 1), ended: make(chan struct{})}, end: end}
	start := time.Now()
	if err := ls.Start(task, front.FD); err != nil {
		t.Fatal(err)
	}
	_ = client.SetDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len("answer"))
	if _, err := io.ReadFull(client, got); err != nil || string(got) != "answer" {
		t.Fatalf("client read %q, %v; want answer", got, err)
	}
	took := time.Since(start)
	info := tcpInfo(t, client)
	if first == policy.SideProxy {
		if _, err := client.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("after the answer: %v; want EOF", err)
		}
		if info.Segs_in != 2 {
			t.Errorf("client received %d segments; want 2: SYN-ACK, then the answer with the proxy's FIN", info.Segs_in)
		}
		_ = client.CloseWrite()
	} else {
		if info.State != unix.BPF_TCP_ESTABLISHED {
			t.Fatalf("client's end in state %d with the answer read; want established: the answer waited for a FIN", info.State)
		}
		_ = client.CloseWrite()
		if rest, err := io.ReadAll(client); err != nil || len(rest) != 0 {
			t.Fatalf("after its FIN the client read %q, %v; want the proxy's FIN", rest, err)
		}
	}
	recv(t, task.ended, 5*time.Second, "the leg's end")
	if td := rec.Done(); td.Outcome != OutcomeOK || td.Front.FirstFIN != first {
		t.Errorf("record %s (%v), front first_fin %s; want ok, %s", td.Outcome, td.Err, td.Front.FirstFIN, first)
	}
	return took
}

// An answer read once its backend's FIN was in (bytes and FIN in one
// segment: a backend that answered and closed) starts no look at the
// client's state (lookForFINFirst): the back leg's peer has ended its
// stream, so no bet on the client is left to make. An answer without
// the FIN behind it does look, once: the back leg (target backend,
// fallback reset) may yet bet. A client that half-closed right behind
// its request (its FIN in before the answer, which the look is for) is
// not looked at either once the backend's FIN came with the answer.
// Both streams whole, the records ok.
func TestLoopsAnswerWithItsFINLooksNotForTheClientsFIN(t *testing.T) {
	looks := countOnLoops(t, &lookHook)
	for _, c := range []struct {
		withFIN, halfClose bool
		looks              int32
	}{{true, false, 0}, {false, false, 1}, {true, true, 0}} {
		looks.Store(0)
		r := relay(t, policyClose(policy.TargetProxy, policy.FallbackFIN), policyClose(policy.TargetPeer, policy.FallbackReset), 5*time.Second)
		passRequest(t, r, 64, 1, c.halfClose)
		answer, sum := payload(100, 2)
		if c.withFIN {
			sendWithFIN(t, r.backend, answer)
		} else if _, err := r.backend.Write(answer); err != nil {
			t.Fatal(err)
		}
		_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		ans := make([]byte, len(answer))
		if _, err := io.ReadFull(r.client, ans); err != nil || sha256.Sum256(ans) != sum {
			t.Fatalf("with FIN %v: client read %d bytes (%v); want the answer by SHA-256", c.withFIN, len(ans), err)
		}
		if !c.withFIN {
			_ = r.backend.CloseWrite()
		}
		if rest, err := io.ReadAll(r.client); err != nil || len(rest) != 0 {
			t.Fatalf("with FIN %v: after the answer the client read %d bytes, %v; want EOF", c.withFIN, len(rest), err)
		}
		_ = r.client.Close()
		td := r.wait(t, 5*time.Second)
		if td.Outcome != OutcomeOK {
			t.Errorf("with FIN %v: record %s (%v); want ok", c.withFIN, td.Outcome, td.Err)
		}
		if n := looks.Load(); n != c.looks {
			t.Errorf("with FIN %v, half-close %v: looked at the client's state %d times at the answer's start; want %d", c.withFIN, c.halfClose, n, c.looks)
		}
	}
}

// On the loops, a short read of an answer whose backend's FIN was in
// already (one epoll event for both) took every byte before the FIN: the
// EOF is taken without the read that would only say so. A FIN that came
// on its own is read as before, and so is an answer followed by the
// backend's reset (an error in the same event): that read says the
// reset, and the record names it. A client that half-closes in its
// request's segment has its EOF taken so too (the backend reads the
// request, then EOF); a client that reads nothing until the backend
// wrote a larger answer and closed gets all of it before the EOF taken
// behind it. Streams whole by SHA-256.
func TestLoopsTakeTheEOFAShortReadShowed(t *testing.T) {
	skipped := countOnLoops(t, &eofHook)
	for _, c := range []struct {
		name      string
		end       string // how the backend ends: "fin" with the answer, "later" (a FIN once the client has the answer), "reset" with the answer
		halfClose bool   // the client's FIN goes in its request's segment
		paused    bool   // the client reads nothing until the backend wrote all and closed
		size      int
		skipped   int32 // -1: either, as the segments happen to come
		outcome   Outcome
	}{
		{"fin_with_answer", "fin", false, false, 100, 1, OutcomeOK},
		{"fin_after_answer", "later", false, false, 100, 0, OutcomeOK},
		{"reset_with_answer", "reset", false, false, 100, 0, OutcomeBackendReset},
		{"client_half_closes_with_request", "fin", true, false, 100, 2, OutcomeOK},
		{"paused_reader", "fin", false, true, 256 << 10, -1, OutcomeOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			skipped.Store(0)
			r := relay(t, policyClose(policy.TargetProxy, policy.FallbackFIN), policyClose(policy.TargetPeer, policy.FallbackReset), 5*time.Second)
			if c.halfClose {
				request, reqSum := payload(64, 1)
				sendWithFIN(t, r.client, request)
				_ = r.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
				if s := readAll(r.backend); s.err != nil || s.sum != reqSum {
					t.Fatalf("backend read %d bytes (%v); want the request by SHA-256, then EOF", s.n, s.err)
				}
			} else {
				passRequest(t, r, 64, 1, false)
			}
			answer, sum := payload(c.size, 2)
			switch {
			case c.paused:
				recv(t, writeAsync(r.backend, answer, true), 5*time.Second, "answer and FIN, the client not reading")
			case c.end == "fin":
				sendWithFIN(t, r.backend, answer)
			default:
				if _, err := r.backend.Write(answer); err != nil {
					t.Fatal(err)
				}
			}
			if c.end == "reset" {
				_ = r.backend.SetLinger(0)
				_ = r.backend.Close()
			}
			_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			ans := make([]byte, len(answer))
			n, err := io.ReadFull(r.client, ans)
			if c.end == "later" {
				_ = r.backend.CloseWrite()
			}
			rest, rerr := io.ReadAll(r.client)
			if err != nil || len(rest) != 0 || sha256.Sum256(ans) != sum {
				t.Fatalf("client read %d bytes (%v), then %d more (%v); want the answer by SHA-256, then an end", n, err, len(rest), rerr)
			}
			_ = r.client.Close()
			td := r.wait(t, 5*time.Second)
			if td.Outcome != c.outcome {
				t.Errorf("record %s (%v); want %s", td.Outcome, td.Err, c.outcome)
			}
			if n := skipped.Load(); c.skipped >= 0 && n != c.skipped {
				t.Errorf("took %d EOFs without their read; want %d", n, c.skipped)
			}
		})
	}
}

// countOnLoops skips t unless the tests relay on the loops (only they
// know a FIN is in as they read), and sets *hook to count its calls
// until t ends.
func countOnLoops(t *testing.T, hook *func()) *atomic.Int32 {
	t.Helper()
	if !onLoops {
		t.Skip("only the loops know the FIN is in as they read; set CLOSEPROXY_TEST_RELAY=loop")
	}
	var n atomic.Int32
	*hook = func() { n.Add(1) }
	t.Cleanup(func() { *hook = nil })
	return &n
}

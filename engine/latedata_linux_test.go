package engine

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// A leg ended with its peer's late bytes in hand is reset once the peer
// acknowledged what it was sent. A peer that reads gets everything and
// the record says nothing was cut; so does one that pauses reading past
// drain_timeout (its window full, the proxy's queue stuck) and reads on
// within idle_timeout, which bounds a paused reader everywhere: the reset
// went at drain_timeout, destroying whole http1 answers a client paused
// on. One that never reads on is reset at idle_timeout from its latest
// progress, and the record says cut. Either way the peer learns by the
// reset that its bytes were lost.
func TestLateDataResetWaitsForTheAcks(t *testing.T) {
	const drain, idle = 300 * time.Millisecond, 1500 * time.Millisecond
	for _, c := range []struct {
		name  string
		pause time.Duration // before the client reads; -1: it never does
	}{{"reads", 0}, {"pauses", 3 * drain}, {"never reads", -1}} {
		client, server := loopback.Pair(t, loopback.Listener(t))
		// What the proxy sent before the end: with the client paused,
		// more than its window and the proxy's buffer take.
		sent := make(chan int64, 1)
		go func() { sent <- sendBeforeTheEnd(t, server, c.pause != 0) }()
		type read struct {
			n   int64
			err error
		}
		got := make(chan read, 1)
		readAll := func() {
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, client)
			got <- read{n, err}
		}
		if c.pause == 0 {
			go readAll()
		}
		n := <-sent
		in := lateInHand(t, client, server)
		if c.pause > 0 {
			go func() {
				time.Sleep(c.pause) // the peer under test: a reader that pauses
				readAll()
			}()
		}
		pol := defFront
		pol.DrainTimeout = drain
		s := frontSession(pol)
		s.Idle = idle
		start := time.Now()
		s.End(policy.Front, server, in, Ending{})
		took := time.Since(start)
		f := s.Rec.Record().Front
		cut := c.pause < 0
		if f.Close != policy.CloseReset || f.Reason != policy.ReasonLateData || f.Cut != cut {
			t.Errorf("%s: front close %s reason %s cut %v; want reset for late_data, cut %v", c.name, f.Close, f.Reason, f.Cut, cut)
		}
		if cut {
			if took < idle-drain/4 {
				t.Errorf("a paused client was reset after %v, before idle_timeout %v", took, idle)
			}
			go readAll()
		}
		r := <-got
		if !cut && r.n != n || !errors.Is(r.err, syscall.ECONNRESET) {
			t.Errorf("%s: the client read %d of %d bytes, then %v (the reset after %v); want every byte if it read on, then a reset", c.name, r.n, n, r.err, took)
		}
		client.Close()
	}
}

// A late-data wait for a paused client ends at the client's answer, not
// at drain_timeout: a client that aborts (closes with bytes unread: its
// kernel resets) is recorded as the client's reset, nothing of the
// proxy's, under the first cause's outcome; one that half-closes and
// then reads gets every byte before the proxy's reset, nothing cut.
//
// The same for a client that answers only after pausing past
// drain_timeout, while the wait goes on for a paused reader: its answer
// still ends the wait, not idle_timeout.
func TestLateDataWaitEndsAtThePeersAnswer(t *testing.T) {
	for _, c := range []struct {
		abort bool
		pause time.Duration // the client's, before it answers: past drain_timeout, or none
	}{{true, 0}, {false, 0}, {true, 600 * time.Millisecond}, {false, 600 * time.Millisecond}} {
		lateDataWaitEnds(t, c.abort, c.pause)
	}
}

func lateDataWaitEnds(t *testing.T, abort bool, pause time.Duration) {
	drain, idle := 10*time.Second, time.Duration(0) // drain far beyond any answer here
	if pause > 0 {
		drain, idle = 200*time.Millisecond, 10*time.Second
	}
	client, server := loopback.Pair(t, loopback.Listener(t))
	n := sendBeforeTheEnd(t, server, true)
	in := lateInHand(t, client, server)
	waiting := entered(t, phaseResetting)
	pol := defFront
	pol.DrainTimeout = drain
	s := frontSession(pol)
	s.Idle = idle
	ended := make(chan time.Duration, 1)
	go func() {
		start := time.Now()
		s.End(policy.Front, server, in, Ending{})
		ended <- time.Since(start)
	}()
	select {
	case <-waiting: // the proxy waits for the paused client's acknowledgements
	case took := <-ended:
		t.Fatalf("abort %v: End returned after %v without waiting for the client; record %+v", abort, took, s.Rec.Record())
	}
	time.Sleep(pause) // the peer under test: a client that pauses before it answers
	var r int64
	var rerr error
	if abort {
		client.Close()
	} else {
		if err := client.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		r, rerr = io.Copy(io.Discard, client)
		client.Close()
	}
	var took time.Duration
	select {
	case took = <-ended: // End is done with the hook
		pollingHook = nil
	case <-time.After(5 * time.Second):
		t.Fatalf("abort %v pause %v: the wait did not end at the client's answer", abort, pause)
	}
	rec := s.Rec.Record()
	f := rec.Front
	switch {
	case abort && (f.Close != policy.ClosePeerReset || rec.Outcome != OutcomeLateData):
		t.Errorf("pause %v: client aborted: front close %s outcome %s (after %v); want peer_reset, %s (the first cause)", pause, f.Close, rec.Outcome, took, OutcomeLateData)
	case !abort && (f.Close != policy.CloseReset || f.Reason != policy.ReasonLateData || f.Cut || r != n || !errors.Is(rerr, syscall.ECONNRESET)):
		t.Errorf("pause %v: client half-closed and read: front close %s reason %s cut %v, read %d of %d then %v; want reset for late_data, not cut, every byte, then a reset",
			pause, f.Close, f.Reason, f.Cut, r, n, rerr)
	}
}

// sendBeforeTheEnd writes what the proxy sent c's peer before the end:
// to a paused peer, until a write stalls (its window and c's send buffer
// full, its send queue not empty: a goroutine that ran late under -race
// meets its deadline before any write); to a reader, 8 MiB. Any other failure is fatal.
func sendBeforeTheEnd(t *testing.T, c *net.TCPConn, paused bool) int64 {
	chunk := make([]byte, 1<<20)
	var n int64
	for range 256 {
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		k, err := c.Write(chunk)
		n += int64(k)
		switch {
		case paused && errors.Is(err, os.ErrDeadlineExceeded):
			if q, _ := sendQueue(c); q == 0 {
				continue // not a stall: this goroutine ran late
			}
			_ = c.SetWriteDeadline(time.Time{})
			return n
		case err != nil:
			t.Errorf("write: %v", err)
			return n
		case !paused && n >= 8<<20:
			return n
		}
	}
	t.Errorf("256 MiB went to a paused peer without a stall")
	return n
}

// lateInHand has the client send late bytes and returns the server's
// reader with them in hand, as a relay holds them when its other side
// is gone.
func lateInHand(t *testing.T, client, server *net.TCPConn) *bufio.Reader {
	t.Helper()
	if _, err := client.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	in := bufio.NewReader(server)
	if _, err := in.Peek(4); err != nil {
		t.Fatal(err)
	}
	_ = server.SetDeadline(time.Time{})
	return in
}

// frontSession is a session whose front leg closes by front and whose
// back leg by the defaults, for End on the front leg alone.
func frontSession(front config.Close) *Session {
	return &Session{Rec: NewRecorder(1, "web", "app", front.TimeWait, defBack.TimeWait), Front: front, Back: defBack}
}

// A late-data reset after the proxy's FIN whose peer's FIN comes between
// rst's look and its close: the kernel closed the socket into TIME-WAIT,
// the close sent no RST, and the record says so (FINs both ways, the
// proxy's first, TIME-WAIT on the proxy), where it claimed a reset that
// never went. The peer's FIN is sent from a hook at that very point.
func TestLateDataResetMetByThePeersFIN(t *testing.T) {
	client, server := loopback.Pair(t, loopback.Listener(t))
	met := false
	rstLookedHook = func(l *leg) {
		if l.finSent {
			_ = client.CloseWrite()
			met = waitReset(l.conn, 5*time.Second) // the kernel's close: TIME-WAIT
		}
	}
	t.Cleanup(func() { rstLookedHook = nil })
	go func() {
		// The client reads the proxy's FIN, then sends what can reach no one.
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, client); err == nil {
			_, _ = client.Write([]byte("late"))
		}
	}()
	s := frontSession(policyClose(policy.TargetProxy, policy.FallbackFIN))
	local, peer := server.LocalAddr().(*net.TCPAddr).AddrPort(), server.RemoteAddr().(*net.TCPAddr).AddrPort()
	s.Rec.Accepted(local, peer, netip.AddrPort{})
	s.End(policy.Front, server, nil, Ending{})
	if !met {
		t.Fatal("the client's FIN never closed the proxy's socket")
	}
	td := s.Rec.Done()
	f := td.Front
	if f.Close != policy.CloseFIN || f.RSTOut >= 0 || f.TimeWait != policy.SideProxy || f.FirstFIN != policy.SideProxy || f.Reason != policy.ReasonLateData {
		t.Errorf("front close %s rst_out %v time_wait %s first_fin %s reason %q; want fin, no reset, TIME-WAIT on the proxy, proxy first, late_data",
			f.Close, f.RSTOut, f.TimeWait, f.FirstFIN, f.Reason)
	}
	if s, ok, err := sockdiag.Find(local, peer); err != nil || !ok || s.State != sockdiag.TimeWait {
		t.Errorf("the kernel's socket %v→%v: %+v found %v (%v), want TIME-WAIT", local, peer, s, ok, err)
	}
}

// A late-data reset waits while its peer reads what it was sent, however
// long that takes, and counts drain_timeout from the peer's latest
// progress: a client that reads slowly (16 KiB every 40 ms, over three
// times drain_timeout in all) gets every byte before the reset, and the
// record says nothing was cut. The reset went at drain_timeout whatever
// the client was doing, destroying whole http1 responses a client still
// read (a review: 739,618 of 1,049,059 bytes at 640 KiB/s).
func TestLateDataResetWaitsForAReaderThatTakesLong(t *testing.T) {
	const drain = 300 * time.Millisecond
	client, server := loopback.Pair(t, loopback.Listener(t))
	// On loopback the client's window opens a segment (64 KiB) at a time:
	// the proxy sees progress every 64 KiB read, about every 160 ms.
	_ = client.SetReadBuffer(32 << 10)
	_ = server.SetWriteBuffer(256 << 10)
	n := sendBeforeTheEnd(t, server, true) // the client reads nothing yet: the queue stalls
	in := lateInHand(t, client, server)
	type read struct {
		n   int64
		err error
	}
	got := make(chan read, 1)
	go func() {
		_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 16<<10)
		var total int64
		for {
			k, err := client.Read(buf)
			total += int64(k)
			if err != nil {
				got <- read{total, err}
				return
			}
			time.Sleep(40 * time.Millisecond) // the peer under test: a slow reader
		}
	}()
	pol := defFront
	pol.DrainTimeout = drain
	s := frontSession(pol)
	start := time.Now()
	s.End(policy.Front, server, in, Ending{})
	took := time.Since(start)
	r := <-got
	if r.n != n || !errors.Is(r.err, syscall.ECONNRESET) {
		t.Errorf("the slow reader read %d of %d bytes, then %v (the reset after %v); want every byte, then a reset", r.n, n, r.err, took)
	}
	if f := s.Rec.Record().Front; f.Reason != policy.ReasonLateData || f.Cut {
		t.Errorf("front reason %s cut %v; want late_data, not cut", f.Reason, f.Cut)
	}
	if took < 3*drain {
		t.Logf("the read took %v, not past three drain_timeouts: the test proved less than it says", took)
	}
}

package engine

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/kernelclaims"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/procnet"
)

// checkAgainstKernel matches every record's TIME-WAIT claims to the
// kernel's by 4-tuple (kernelclaims.Check) and returns how many legs said
// unknown.
func checkAgainstKernel(t *testing.T, recs []*Teardown, mark procnet.OverflowMark) (unknown int) {
	t.Helper()
	return kernelclaims.Check(t, legsOf(recs), mark)
}

// settle waits until no socket of the records is still closing.
func settle(t *testing.T, recs []*Teardown) {
	t.Helper()
	kernelclaims.Settle(t, legsOf(recs))
}

func legsOf(recs []*Teardown) []kernelclaims.Leg {
	var legs []kernelclaims.Leg
	for _, td := range recs {
		for _, l := range []*LegRecord{&td.Front, &td.Back} {
			legs = append(legs, kernelclaims.Leg{Session: td.ID, Name: l.leg.String(), Local: l.Local, Peer: l.Peer, TimeWait: l.TimeWait})
		}
	}
	return legs
}

// TestRecordsMatchKernelRacingFINs: a backend that closes right after its
// answer and a client that closes the instant it has it (curl, browsers)
// send FINs at about the same moment. Every record's TIME-WAIT claim
// matches the kernel, socket by socket.
func TestRecordsMatchKernelRacingFINs(t *testing.T) {
	const conns, at = 400, 20
	resp, _ := payload(2000, 8)
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			frontLn, backLn = loopback.Listener(t), loopback.Listener(t)
			mark := procnet.MarkTimeWaitOverflow()
			recs := sessions(conns, at, func() *Teardown { return racingSession(t, pp.front, pp.back, resp) })
			settle(t, recs)
			unknown := checkAgainstKernel(t, recs, mark)
			counts := map[string]int{}
			for _, td := range recs {
				counts[fmt.Sprintf("front %s back %s", td.Front.TimeWait, td.Back.TimeWait)]++
			}
			t.Logf("%d sessions: %v; unknown legs %d", len(recs), counts, unknown)
			if unknown > conns/20 {
				t.Errorf("%d legs of %d sessions unknown, want under 5%%", unknown, conns)
			}
		})
	}
}

// sessions runs one n times, at most at at once, and returns the records
// it made.
func sessions(n, at int, one func() *Teardown) []*Teardown {
	recs := make([]*Teardown, n)
	sem := make(chan struct{}, at)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			recs[i] = one()
		}()
	}
	wg.Wait()
	return recs
}

// racingSession relays one exchange: the backend answers and closes at
// once, the client closes the instant it has the answer.
func racingSession(t *testing.T, front, back config.Close, resp []byte) *Teardown {
	r := startRelay(t, frontLn, backLn, front, back, 5*time.Second)
	go func() {
		buf := make([]byte, 3)
		if _, err := io.ReadFull(r.backend, buf); err == nil {
			r.backend.Write(resp)
		}
		r.backend.Close()
	}()
	r.client.Write([]byte("req"))
	io.ReadFull(r.client, make([]byte, len(resp)))
	r.client.Close()
	<-r.done
	return r.rec.Done()
}

// frontLn and backLn are the listeners of the current racing test: the
// client's and the backend's.
var frontLn, backLn *net.TCPListener

// TestClientFirstEndsWithinTheAdaptiveGrace: the headline case. The client
// closes first after a complete answer; the backend keeps its connection
// alive. With adaptive_grace the back leg's withheld FIN waits
// milliseconds, not the whole peer_fin_grace, so the client's port is
// freed at once; front nowhere and back backend (fallback reset) leave no
// TIME-WAIT anywhere.
func TestClientFirstEndsWithinTheAdaptiveGrace(t *testing.T) {
	const conns, at = 200, 20
	front := policyClose(policy.TargetNowhere, policy.FallbackFIN)
	back := policyClose(policy.TargetPeer, policy.FallbackReset)
	front.AdaptiveGrace, back.AdaptiveGrace = true, true
	front.PeerFinGrace, back.PeerFinGrace = time.Second, time.Second
	resp, _ := payload(2000, 9)
	frontLn, backLn = loopback.Listener(t), loopback.Listener(t)
	var mu sync.Mutex
	var longest time.Duration
	mark := procnet.MarkTimeWaitOverflow()
	recs := sessions(conns, at, func() *Teardown {
		r := startRelay(t, frontLn, backLn, front, back, 5*time.Second)
		go func() { // a keep-alive backend: answers, then waits for more
			if _, err := io.ReadFull(r.backend, make([]byte, 3)); err == nil {
				r.backend.Write(resp)
			}
			io.Copy(io.Discard, r.backend)
			r.backend.Close()
		}()
		r.client.Write([]byte("req"))
		io.ReadFull(r.client, make([]byte, len(resp)))
		closed := time.Now()
		r.client.Close()
		<-r.done
		el := time.Since(closed)
		mu.Lock()
		longest = max(longest, el)
		mu.Unlock()
		return r.rec.Done()
	})
	settle(t, recs)
	checkAgainstKernel(t, recs, mark)
	for _, td := range recs {
		if td.Outcome != OutcomeOK || td.Front.TimeWait != policy.SideNone || td.Back.TimeWait != policy.SideNone {
			t.Fatalf("record: outcome %s (%v), front %s, back %s; want ok, none, none: %+v", td.Outcome, td.Err, td.Front.TimeWait, td.Back.TimeWait, td)
		}
	}
	t.Logf("longest session after the client's close: %v", longest)
	if longest > 300*time.Millisecond {
		t.Errorf("a session lasted %v after the client closed; want the adaptive grace (tens of ms), not peer_fin_grace", longest)
	}
}

// TestTCPInfoAllocatesNothing: the TCP_INFO read behind every timer look
// and every FIN reuses a pooled struct.
func TestTCPInfoAllocatesNothing(t *testing.T) {
	ln := loopback.Listener(t)
	client, srv := loopback.Pair(t, ln)
	if _, err := client.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Read(make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	l := newLeg(policy.Front, srv, &defFront, nil)
	if p := l.tcp().progress(); p != 3 {
		t.Fatalf("progress = %d after 3 bytes received, want 3", p)
	}
	if n := testing.AllocsPerRun(100, func() { l.tcp() }); n != 0 {
		t.Errorf("a TCP_INFO read allocates %.0f times, want 0", n)
	}
}

// At the client's FIN the send queue is read for doneReading only while a
// decision of the back leg may still ask for it: not once the backend's
// FIN is in, nor once the back leg is closed (the usual short connection:
// backend first, then the client after the proxy's FIN). Nothing was sent
// to the client, so a reading finds the queue empty: finAckedAll true
// where the reading was made, false where it was left out.
func TestClientFINReadsTheSendQueueOnlyWhileAsked(t *testing.T) {
	ln := loopback.Listener(t)
	for _, c := range []struct {
		name              string
		backFIN, backShut bool
		want              bool
	}{
		{"back leg open, the backend's FIN not in", false, false, true},
		{"the backend's FIN in", true, false, false},
		{"back leg closed", false, true, false},
	} {
		s := &Session{Rec: NewRecorder(1, "web", "app", policy.TargetProxy, policy.TargetPeer)}
		s.Back = config.Close{TimeWait: policy.TargetPeer, Fallback: policy.FallbackReset}
		a, b := dialPair(ln)
		x := newExecutor(s)
		f := x.addLeg(policy.Front, a)
		bk := x.addLeg(policy.Back, b)
		x.addDir(f, nil) // a sink: the client's FIN goes nowhere, no decision of the back leg follows
		bk.peerFIN = c.backFIN
		if c.backShut {
			bk.phase = phaseClosed
		}
		x.peerFIN(x.dirs[0])
		if f.finAckedAll != c.want {
			t.Errorf("%s: finAckedAll %v, want %v (true only where the empty send queue was read)", c.name, f.finAckedAll, c.want)
		}
		a.Close()
		b.Close()
	}
}

// heldInKernel counts what a socket received and nobody read, and nothing
// once it was read (the out-of-order queue it also counts needs a lost
// segment: integration.TestCloseMatrixUnderLoss).
func TestHeldInKernel(t *testing.T) {
	client, server := loopback.Pair(t, loopback.Listener(t))
	if held, err := heldInKernel(server); err != nil || held != 0 {
		t.Fatalf("before any byte: %d, %v; want 0", held, err)
	}
	if _, err := client.Write([]byte("late but on its way")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for held, _ := heldInKernel(server); held == 0; held, _ = heldInKernel(server) {
		if time.Now().After(deadline) {
			t.Fatal("19 unread bytes: nothing held after 5s")
		}
		time.Sleep(time.Millisecond) // polled: the bytes cross loopback on their own time
	}
	buf := make([]byte, 64)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := server.Read(buf); err != nil || n != 19 {
		t.Fatalf("read %d, %v", n, err)
	}
	if held, err := heldInKernel(server); err != nil || held != 0 {
		t.Errorf("once read: %d, %v; want 0", held, err)
	}
}

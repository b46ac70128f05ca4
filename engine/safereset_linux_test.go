package engine

import (
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A client that half-closed, read its whole answer and then reset (it
// closed with SO_LINGER 0) before the proxy's safe reset went: the
// kernel closed the proxy's socket at the client's RST, so closing it
// sends nothing. The record says the client reset the leg, not a reset
// of the proxy's that never went out.
func TestSafeResetAfterThePeersResetIsTheirs(t *testing.T) {
	client, server := answeredClient(t)
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Read(make([]byte, 1)); err != io.EOF { // the client's FIN
		t.Fatalf("server read %v, want the client's FIN", err)
	}
	_ = client.SetLinger(0)
	client.Close()
	if !waitReset(server, 5*time.Second) {
		t.Fatal("the client's RST never reached the proxy's socket")
	}
	pol := policyClose(policy.TargetNowhere, policy.FallbackFIN)
	s := frontSession(pol)
	s.End(policy.Front, server, nil, Ending{})
	requireClientsReset(t, s.Rec.Record())
}

// The same with no FIN either way (http1 between exchanges: an answer
// whole by its length, a client that reads it and goes silent), the
// client's RST coming as the safe reset is to go: nothing of the proxy's
// leaves, and the record says so.
func TestSafeResetWithoutFINsMetByThePeersResetIsTheirs(t *testing.T) {
	client, server := answeredClient(t)
	var arrived bool
	rstHook = func(l *leg, sent bool) {
		if !sent {
			_ = client.SetLinger(0)
			_ = client.Close()
			arrived = waitReset(l.conn, 5*time.Second)
		}
	}
	defer func() { rstHook = nil }()
	s := frontSession(policyClose(policy.TargetNowhere, policy.FallbackFIN))
	s.End(policy.Front, server, nil, Ending{})
	if !arrived {
		t.Fatal("the client's RST never reached the proxy's socket")
	}
	requireClientsReset(t, s.Rec.Record())
}

// requireClientsReset checks a record whose front leg the client reset
// before the proxy's safe reset went: the client's reset recorded, as
// close and outcome, no RST of the proxy's claimed (none went), no
// TIME-WAIT, nothing cut.
func requireClientsReset(t *testing.T, td *Teardown) {
	t.Helper()
	if f := td.Front; f.Close != policy.ClosePeerReset || f.RSTOut >= 0 || f.TimeWait != policy.SideNone || f.Cut || td.Outcome != OutcomeClientReset {
		t.Errorf("front close %s, rst_out %v, time_wait %s, cut %v, outcome %s; want peer_reset, none sent, no TIME-WAIT, not cut, client_reset", f.Close, f.RSTOut, f.TimeWait, f.Cut, td.Outcome)
	}
}

// answeredClient returns a loopback pair, the proxy's end (server) having
// sent a whole answer that the client has read.
func answeredClient(t *testing.T) (client, server *net.TCPConn) {
	client, server = loopback.Pair(t, loopback.Listener(t))
	answer := []byte("the whole answer")
	if _, err := server.Write(answer); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, make([]byte, len(answer))); err != nil {
		t.Fatal(err)
	}
	return client, server
}

// answeredNowhere relays one request and a whole answer that ends with
// the backend's FIN, to a client that reads it all and sends no FIN: the
// front leg (target nowhere) waits its grace for the client's FIN, then
// resets. hook runs, as rstHook, for the front leg only, until the relay
// ended; it gets the client's end through clients.
func answeredNowhere(t *testing.T, hook func(c *net.TCPConn, l *leg, sent bool)) *Teardown {
	clients := make(chan *net.TCPConn, 1)
	rstHook = func(l *leg, sent bool) {
		if l.name == policy.Front {
			c := <-clients
			hook(c, l, sent)
			clients <- c
		}
	}
	t.Cleanup(func() { rstHook = nil }) // after the relay's cleanup: it ended
	r := relay(t, policyClose(policy.TargetNowhere, policy.FallbackFIN), policyClose(policy.TargetProxy, policy.FallbackFIN), 5*time.Second)
	recv(t, writeAsync(r.client, []byte("req"), false), time.Second, "request")
	if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	answer := []byte("the whole answer")
	recv(t, writeAsync(r.backend, answer, true), time.Second, "answer")
	if _, err := io.ReadFull(r.client, make([]byte, len(answer))); err != nil {
		t.Fatal(err)
	}
	clients <- r.client // the grace (300 ms) runs until rst, which takes it
	return r.wait(t, 5*time.Second)
}

// waitReset polls c's TCP state until closed (an RST came) or within has
// passed: no event says a socket the proxy does not read was reset.
func waitReset(c syscall.Conn, within time.Duration) bool {
	for deadline := time.Now().Add(within); !ResetByPeer(c); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// The same, the copier's read having taken the reset (and so the
// socket's pending error) but not noted it yet as the safe reset looks:
// a copier preempted between the two, made here by a hook that holds it
// 30 ms there. The look waits for that read to end (relay goroutines;
// on the loops the read and the look are one goroutine's).
func TestSafeResetMetByAResetACopierHasNotNotedIsTheirs(t *testing.T) {
	if onLoops {
		t.Skip("no copier on the loops: the look and the read are one goroutine's")
	}
	taken := make(chan struct{})
	var once sync.Once
	readResetHook = func() {
		once.Do(func() { close(taken) })
		time.Sleep(30 * time.Millisecond) // the preemption, not a wait for anything
	}
	defer func() { readResetHook = nil }()
	var arrived bool
	td := answeredNowhere(t, func(c *net.TCPConn, l *leg, sent bool) {
		if !sent {
			_ = c.SetLinger(0)
			_ = c.Close()
			select { // the look comes while the copier holds the reset
			case <-taken:
				arrived = true
			case <-time.After(5 * time.Second):
			}
		}
	})
	if !arrived {
		t.Fatal("no copier's read met the client's RST")
	}
	requireClientsReset(t, td)
}

// A client that read its whole answer and reset (SO_LINGER 0) without a
// FIN just as the proxy's safe reset is to go, before the proxy read its
// RST: the kernel closed the proxy's socket, so closing it sends nothing.
// The record says the client reset the leg, not a reset of the proxy's.
func TestSafeResetMetByThePeersUnreadResetIsTheirs(t *testing.T) {
	var arrived bool
	td := answeredNowhere(t, func(c *net.TCPConn, l *leg, sent bool) {
		if !sent {
			_ = c.SetLinger(0)
			_ = c.Close()
			arrived = waitReset(l.conn, 5*time.Second)
		}
	})
	if !arrived {
		t.Fatal("the client's RST never reached the proxy's socket")
	}
	requireClientsReset(t, td)
}

// The proxy's safe reset leaves when its record is written, not later
// (the loops close descriptors at the end of a turn): a peer's FIN or RST
// that came in between would make the close send nothing, and the record
// would claim an RST that never went.
func TestSafeResetLeavesWhenRecorded(t *testing.T) {
	var left bool
	td := answeredNowhere(t, func(c *net.TCPConn, l *leg, sent bool) {
		if sent {
			left = waitReset(c, 2*time.Second)
		}
	})
	if !left {
		t.Error("the proxy's RST had not reached the client when rst returned")
	}
	if f := td.Front; f.Close != policy.CloseReset || f.RSTOut < 0 {
		t.Errorf("front close %s, rst_out %v (%s); want the proxy's reset", f.Close, f.RSTOut, f.Reason)
	}
}

package engine

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A backend that sends its answer and resets once the proxy's kernel has
// acknowledged all of it, to a client that is not reading yet: the client,
// reading later, gets every byte the backend sent, then the reset (never a
// clean end). The proxy read and acknowledged those bytes; a reset passed
// on at once would drop what still waits in the client's send queue.
func TestBackendResetDeliversWhatCameBeforeIt(t *testing.T) {
	resp, sum := payload(2<<20, 9)
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := relay(t, pp.front, pp.back, 5*time.Second)
			recv(t, writeAsync(r.client, []byte("req"), false), time.Second, "request")
			if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
				t.Fatal(err)
			}
			answerThenReset(t, r.backend, resp)
			c := readAll(r.client) // only now, after the backend's reset
			td := r.wait(t, 5*time.Second)
			if c.n != int64(len(resp)) || c.sum != sum || !isReset(c.err) {
				t.Errorf("the client read %d of %d bytes (sum ok %v), then %v; want all of them, then an RST", c.n, len(resp), c.sum == sum, c.err)
			}
			if td.Outcome != OutcomeBackendReset || !td.Front.Cut || td.Back.Close != policy.ClosePeerReset {
				t.Errorf("outcome %s, front cut %v, back close %s: want backend_reset, cut, peer_reset", td.Outcome, td.Front.Cut, td.Back.Close)
			}
		})
	}
}

// The same to a client that pauses reading for longer than drain_timeout
// before it reads on (within idle_timeout): it gets every byte, then the
// reset. The reset went once drain_timeout passed with no progress, and
// destroyed what the client had not taken yet (80 of 80 in a review,
// where the backend's reset was its kernel's refusal of what the client
// sent after a whole answer).
func TestBackendResetWaitsForAPausedClient(t *testing.T) {
	resp, sum := payload(2<<20, 11)
	front, back := defFront, defBack
	front.DrainTimeout = 200 * time.Millisecond
	r := relay(t, front, back, 5*time.Second)
	recv(t, writeAsync(r.client, []byte("req"), false), time.Second, "request")
	if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	answerThenReset(t, r.backend, resp)
	time.Sleep(4 * front.DrainTimeout) // the peer under test: a client that pauses reading
	c := readAll(r.client)
	td := r.wait(t, 5*time.Second)
	if c.n != int64(len(resp)) || c.sum != sum || !isReset(c.err) {
		t.Errorf("the client read %d of %d bytes (sum ok %v), then %v; want all of them, then an RST", c.n, len(resp), c.sum == sum, c.err)
	}
	if td.Outcome != OutcomeBackendReset || !td.Front.Cut || td.Back.Close != policy.ClosePeerReset {
		t.Errorf("outcome %s, front cut %v, back close %s: want backend_reset, cut, peer_reset", td.Outcome, td.Front.Cut, td.Back.Close)
	}
}

// The same, with the client still uploading to a backend that stopped
// reading: the proxy meets the backend's RST first on a write of the
// upload, while the rest of the answer still waits, unread, in the back
// leg's socket. That socket must not be closed before the answer's
// direction read it: the client gets every byte, then the reset.
func TestBackendResetMetByTheUploadDeliversTheAnswer(t *testing.T) {
	resp, sum := payload(2<<20, 10)
	up := make([]byte, 8<<20)
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := relay(t, pp.front, pp.back, 5*time.Second)
			uploaded := writeAsync(r.client, up, false) // ends in the proxy's reset
			if _, err := io.ReadFull(r.backend, make([]byte, 64<<10)); err != nil {
				t.Fatal(err)
			}
			answerThenReset(t, r.backend, resp)
			c := readAll(r.client) // only now, after the backend's reset
			td := r.wait(t, 5*time.Second)
			<-uploaded
			// The upload's write may take the RST's error first; the read
			// then says EOF, and the socket's state tells the reset.
			reset := isReset(c.err) || c.err == nil && ResetByPeer(r.client)
			if c.n != int64(len(resp)) || c.sum != sum || !reset {
				t.Errorf("the client read %d of %d bytes (sum ok %v), then %v; want all of them, then an RST", c.n, len(resp), c.sum == sum, c.err)
			}
			if td.Outcome != OutcomeBackendReset || !td.Front.Cut || td.Back.Close != policy.ClosePeerReset {
				t.Errorf("outcome %s, front cut %v, back close %s: want backend_reset, cut, peer_reset", td.Outcome, td.Front.Cut, td.Back.Close)
			}
		})
	}
}

// The client half-closes after the backend's reset, while the end of the
// answer still waits unread in the back leg's socket (the client reads
// nothing yet, and the proxy's small send buffer toward it is full): the
// proxy's end of the client's stream toward the backend (its FIN) meets
// the reset first. The back leg's socket must not be closed before the
// answer's direction read it: the client gets every byte, then the reset.
func TestBackendResetMetByTheClientsFINDeliversTheAnswer(t *testing.T) {
	resp, sum := payload(512<<10, 11)
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := resetBehindAFullClient(t, pp.front, pp.back, 5*time.Second, resp)
			c := readAll(r.client) // only now, after the backend's reset and the client's FIN
			td := r.wait(t, 5*time.Second)
			if c.n != int64(len(resp)) || c.sum != sum || !isReset(c.err) {
				t.Errorf("the client read %d of %d bytes (sum ok %v), then %v; want all of them, then an RST", c.n, len(resp), c.sum == sum, c.err)
			}
			if td.Outcome != OutcomeBackendReset || td.Back.Close != policy.ClosePeerReset {
				t.Errorf("outcome %s, back close %s: want backend_reset, peer_reset", td.Outcome, td.Back.Close)
			}
		})
	}
}

// The same reset, and a client that never reads: the answer's end waits
// in the back socket until idle_timeout ends the session. The record
// names the cause, the backend's reset, not the timeout that came after.
func TestBackendResetBehindAStalledClientIsRecordedAsTheReset(t *testing.T) {
	resp, _ := payload(512<<10, 12)
	ends := policyClose(policy.TargetProxy, policy.FallbackFIN)
	r := resetBehindAFullClient(t, ends, ends, 300*time.Millisecond, resp)
	td := r.wait(t, 5*time.Second)
	if td.Outcome != OutcomeBackendReset || !td.Front.Cut {
		t.Errorf("outcome %s (%v), front cut %v: want backend_reset, the client's stream cut", td.Outcome, td.Err, td.Front.Cut)
	}
}

// resetBehindAFullClient relays a request to a backend that answers resp
// and resets, to a client that reads nothing (the proxy's send buffer
// toward it 4 KiB, so most of resp waits in the back leg's socket), then
// half-closes the client.
func resetBehindAFullClient(t *testing.T, front, back config.Close, idle time.Duration, resp []byte) *relayed {
	t.Helper()
	r := relayTuned(t, front, back, idle, func(front, back *net.TCPConn) {
		_ = front.SetWriteBuffer(4 << 10)
		_ = back.SetReadBuffer(1 << 20) // holds what the client cannot take yet
	})
	recv(t, writeAsync(r.client, []byte("req"), false), time.Second, "request")
	if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	answerThenReset(t, r.backend, resp)
	if err := r.client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	return r
}

// answerThenReset writes resp on the backend's connection and, once the
// proxy's kernel acknowledged all of it, resets the connection.
func answerThenReset(t *testing.T, c *net.TCPConn, resp []byte) {
	t.Helper()
	recv(t, writeAsync(c, resp, false), 5*time.Second, "the answer into the backend's socket")
	waitAcked(t, c)
	_ = c.SetLinger(0)
	_ = c.Close()
}

// waitAcked waits until c's peer acknowledged every byte written to c.
// No event says so: it polls the send queue, bounded.
func waitAcked(t *testing.T, c *net.TCPConn) {
	t.Helper()
	if !loopback.Acked(c, 5*time.Second) {
		t.Fatal("the proxy's kernel left bytes unacknowledged after 5 s")
	}
}

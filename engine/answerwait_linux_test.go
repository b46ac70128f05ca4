package engine

import (
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// A client that half-closed at once and has not taken the answer when the
// proxy's FIN goes (second, behind it) is a reader like any other: the
// wait for its answer to that FIN lasts while it reads, and a pause is
// waited for until idle_timeout. It ended at drain_timeout as a FIN
// exchange: the record said ok and the client's TIME-WAIT with the answer
// still on its way (megabytes of it), and a client that then closed its
// socket unread (an RST, no TIME-WAIT) or paused past idle_timeout was
// never told apart. A client that pauses past drain_timeout and then
// reads on gets the answer whole, and the record, written after, says
// ok and its TIME-WAIT. Both relays.
func TestAnswerWaitFollowsTheReader(t *testing.T) {
	for _, then := range []string{"abort", "read", "never"} {
		answering := entered(t, phaseAnswering)
		ends := policyClose(policy.TargetProxy, policy.FallbackFIN)
		idle := 3 * time.Second
		r := relay(t, ends, ends, idle)
		passRequest(t, r, 100, 1, true) // and the client's FIN: first
		answer, sum := payload(512<<10, 2)
		sent := writeAsync(r.backend, answer, true)
		select { // the proxy's FIN went, behind what the client has not taken
		case <-answering:
		case <-time.After(5 * time.Second):
			t.Fatal("the proxy never waited for the client's answer to its FIN")
		}
		recv(t, sent, time.Second, "answer")
		start := time.Now()
		if then != "never" {
			// The client pauses past drain_timeout (the peer under test).
			time.Sleep(ends.DrainTimeout + 500*time.Millisecond)
			select {
			case <-r.done:
				t.Fatalf("%s: the session ended while its client paused with the answer unread", then)
			default:
			}
		}
		switch then {
		case "abort": // it closes its socket with the answer unread: an RST
			_ = r.client.Close()
			td := r.wait(t, 5*time.Second)
			if td.Outcome != OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || td.Front.TimeWait != policy.SideNone {
				t.Errorf("abort: record %s (%v), front close %s, time_wait %s; want client_reset, peer_reset, none",
					td.Outcome, td.Err, td.Front.Close, td.Front.TimeWait)
			}
			continue
		case "read": // it reads on, to the end
			_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got := readAll(r.client); got.err != nil || got.sum != sum {
				t.Errorf("read on: %d bytes (%v); want the answer whole by SHA-256, then EOF", got.n, got.err)
			}
			td := r.wait(t, 5*time.Second)
			if td.Outcome != OutcomeOK || td.Front.FirstFIN != policy.SideClient || td.Front.TimeWait != policy.SideClient {
				t.Errorf("read on: record %s (%v), front first_fin %s, time_wait %s; want ok, client, client",
					td.Outcome, td.Err, td.Front.FirstFIN, td.Front.TimeWait)
			}
			continue
		}
		// A client that never reads on: cut at idle_timeout, its record
		// says so.
		td := r.wait(t, idle+5*time.Second)
		waited := time.Since(start)
		if td.Outcome != OutcomeTimeout || !td.Front.Cut || td.Front.Close != policy.CloseReset || waited < idle-ends.DrainTimeout {
			t.Errorf("paused: record %s (%v) after %v, front close %s, cut %v; want timeout, reset, cut, near idle_timeout (%v)",
				td.Outcome, td.Err, waited, td.Front.Close, td.Front.Cut, idle)
		}
	}
}

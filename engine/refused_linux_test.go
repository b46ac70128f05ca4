package engine

import (
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// A client that sends its request and closes at once (close, not a
// half-close) before the answer comes: the answer reaches a socket its
// application closed, and the client's kernel answers it with an RST,
// whether the bytes come alone or with the proxy's FIN in their segment.
// The client's FIN came first, but it holds no TIME-WAIT: the record
// must say the client reset the leg (close peer_reset, time_wait none),
// not that the proxy's FIN closed it second. What the client sent
// reached the backend whole (SHA-256), and the backend's leg ends by its
// FIN as usual, unless the client's RST came while the answer still
// streamed (then the proxy resets it).
func TestAnswerToAClosedClientIsItsReset(t *testing.T) {
	for _, n := range []int{200, 64 << 10} { // held for the FIN on the loops, and not
		ends := policyClose(policy.TargetProxy, policy.FallbackFIN)
		r := relay(t, ends, ends, 5*time.Second)
		req, sum := payload(100, 3)
		if _, err := r.client.Write(req); err != nil {
			t.Fatal(err)
		}
		_ = r.client.Close()
		// The backend reads the request and the proxy's FIN after it:
		// the proxy read the client's FIN before the answer.
		_ = r.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
		if got := readAll(r.backend); got.err != nil || got.sum != sum {
			t.Fatalf("backend read %d bytes (%v); want the request by SHA-256, then EOF", got.n, got.err)
		}
		answer, _ := payload(n, 4)
		_, err := r.backend.Write(answer)
		if err == nil {
			err = r.backend.CloseWrite()
		}
		// A long answer may meet the client's RST while it still streams:
		// the proxy then cuts it, and resets the backend before its FIN.
		cutFirst := err != nil
		td := r.wait(t, 5*time.Second)
		if td.Outcome != OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || td.Front.TimeWait != policy.SideNone {
			t.Errorf("%d bytes: record %s (%v), front close %s, time_wait %s, first_fin %s; want client_reset, peer_reset, none",
				n, td.Outcome, td.Err, td.Front.Close, td.Front.TimeWait, td.Front.FirstFIN)
		}
		if (td.Back.Close == policy.CloseFIN) == cutFirst || td.Back.Cut {
			t.Errorf("%d bytes: back close %s, cut %v, the backend's FIN %v; want fin, or (the FIN failing) reset, the request whole",
				n, td.Back.Close, td.Back.Cut, err)
		}
	}
}

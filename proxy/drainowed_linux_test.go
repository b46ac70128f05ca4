package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// An answer whose head went before draining began cannot say
// Connection: close, and its client may send its next request as it
// reads the answer's end: closing the connection then refused that
// request (late_data; a review: 3 to 8 of 20 keep-alive clients of 5 MB
// answers through a drain or SIGTERM, on both relays). Draining waits for
// it while the client takes the answer and peer_fin_grace after: the
// request is answered with Connection: close; a client that sends none
// is closed after the wait, the record ok. One that half-closes or
// resets during the wait ends it at once, nothing cut.
func TestDrainAnswersTheRequestAnAnswerInFlightAllowed(t *testing.T) {
	const size = 4 << 20
	for _, then := range []string{"next request", "nothing", "half-close", "reset"} {
		t.Run(then, func(t *testing.T) {
			o, pattern := framedOrigin(t)
			h := startProxy(t, config.Listener{IdleTimeout: 30 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
			// A receive buffer smaller than the answer: what the client
			// has not read waits in the proxy's send queue, where the
			// wait sees it (an answer the client's kernel took whole
			// and its reader takes longer than the grace to read is
			// not seen).
			d, err := rcvBufDialer(64<<10).DialContext(t.Context(), "tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			c := d.(*net.TCPConn)
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET /length/%d HTTP/1.1\r\nHost: x\r\n\r\n", size)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.Close {
				t.Fatalf("first response: %v, close %v", err, resp != nil && resp.Close)
			}
			h.srv.Drain() // the head is out: it said nothing of a close
			body, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(body, pattern(size)) {
				t.Fatalf("first body: %d bytes, %v; want %d, the origin's", len(body), err, size)
			}
			requests, wantClose, firstFIN := 1, policy.CloseFIN, policy.SideProxy
			switch then {
			case "next request":
				requests++
				fmt.Fprint(c, "GET /length/100 HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("the next request, sent as the answer ended: %v; want it answered", err)
				}
				body, err := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || !resp.Close || err != nil || !bytes.Equal(body, pattern(100)) {
					t.Errorf("next response: %d, close %v, %d bytes, %v; want 200, Connection: close, the origin's 100", resp.StatusCode, resp.Close, len(body), err)
				}
			case "half-close":
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
				firstFIN = policy.SideClient
			case "reset":
				if err := allAcked(c); err != nil {
					t.Fatal(err)
				}
				reset(t, c)
				wantClose = policy.ClosePeerReset
			}
			if then != "reset" {
				if _, err := br.ReadByte(); err != io.EOF {
					t.Errorf("after the last response: %v, want EOF (the proxy's FIN)", err)
				}
				c.Close()
			}
			td := h.record(t)
			if td.Outcome != engine.OutcomeOK || td.BackRequests != requests || td.Front.Close != wantClose || td.Front.Cut ||
				wantClose == policy.CloseFIN && td.Front.FirstFIN != firstFIN {
				t.Errorf("record: outcome %s (%v), %d requests, front close %s, cut %v, first FIN %s; want ok, %d, %s, not cut, first FIN %s",
					td.Outcome, td.Err, td.BackRequests, td.Front.Close, td.Front.Cut, td.Front.FirstFIN, requests, wantClose, firstFIN)
			}
			if (then == "next request" || then == "nothing") && td.Front.Reason != policy.ReasonDraining {
				t.Errorf("record: front reason %q, want %s", td.Front.Reason, policy.ReasonDraining)
			}
		})
	}
}

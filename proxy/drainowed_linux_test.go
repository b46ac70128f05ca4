package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
// is closed after the wait, the record ok.
func TestDrainAnswersTheRequestAnAnswerInFlightAllowed(t *testing.T) {
	const size = 4 << 20
	for _, next := range []bool{true, false} {
		t.Run(fmt.Sprintf("next request %v", next), func(t *testing.T) {
			o, pattern := framedOrigin(t)
			h := startProxy(t, config.Listener{IdleTimeout: 30 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
			// A receive buffer smaller than the answer: what the client
			// has not read waits in the proxy's send queue, where the
			// wait sees it (an answer the client's kernel took whole
			// and its reader takes longer than the grace to read is
			// not seen).
			d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 64<<10) }); err != nil {
					return err
				}
				return serr
			}}
			c, err := d.DialContext(t.Context(), "tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
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
			requests := 1
			if next {
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
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("after the last response: %v, want EOF (the proxy's FIN)", err)
			}
			c.Close()
			td := h.record(t)
			if td.Outcome != engine.OutcomeOK || td.Front.Reason != policy.ReasonDraining || td.BackRequests != requests {
				t.Errorf("record: outcome %s (%v), front reason %q, %d requests; want ok, draining, %d",
					td.Outcome, td.Err, td.Front.Reason, td.BackRequests, requests)
			}
		})
	}
}

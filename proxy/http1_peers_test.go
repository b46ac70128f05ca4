package proxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// Clients that are not polite, in http1 mode: each gets every byte of its
// answer (by SHA-256) and the record says ok, with the client's FIN first.
// A client that half-closes right after its request still reads the
// answer; one that stops reading a body larger than every buffer on its
// way (for less than idle_timeout) holds up the backend and loses
// nothing; one that closes the instant it has the body ends the session
// cleanly.
func TestHTTP1ImpoliteClients(t *testing.T) {
	big := make([]byte, 12<<20+3) // more than the socket buffers on its way hold
	for i := range big {
		big[i] = byte(i*7 + i>>11)
	}
	blob := big[:1<<20+5]
	wantBig, want := sha256.Sum256(big), sha256.Sum256(blob)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		b := map[string][]byte{"/blob": blob, "/big": big}[r.URL.Path]
		if b == nil {
			hello(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))

	// ask sends raw on a new connection (a small receive window if
	// small), half-closing after it if halfClose, and returns the
	// connection and its reader.
	ask := func(t *testing.T, raw string, halfClose, small bool) (*net.TCPConn, *bufio.Reader) {
		t.Helper()
		c := dialClient(t, h.addr, small)
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		if halfClose {
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
		}
		return c, bufio.NewReader(c)
	}
	// body reads one response and returns its status and body.
	body := func(t *testing.T, br *bufio.Reader) (int, []byte) {
		t.Helper()
		status, b, _ := readBody(t, br)
		return status, b
	}
	// ended checks the session's record: ok, n requests, not cut, the
	// client's FIN first on the front leg.
	ended := func(t *testing.T, n int) {
		t.Helper()
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.BackRequests != n || td.Front.FirstFIN != policy.SideClient || td.Front.Cut {
			t.Errorf("record: outcome %s (%v), %d requests, front first FIN %s, cut %v; want ok, %d, client, not cut",
				td.Outcome, td.Err, td.BackRequests, td.Front.FirstFIN, td.Front.Cut, n)
		}
	}

	t.Run("half-closed after its request", func(t *testing.T) {
		_, br := ask(t, "GET /blob HTTP/1.1\r\nHost: x\r\n\r\n", true, false)
		if status, b := body(t, br); status != 200 || sha256.Sum256(b) != want {
			t.Errorf("status %d, %d bytes, want 200 and the blob (%d bytes) by SHA-256", status, len(b), len(blob))
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("after the answer: %v, want EOF", err)
		}
		ended(t, 1)
	})
	t.Run("half-closed after a body", func(t *testing.T) {
		up := make([]byte, 300<<10)
		_, br := ask(t, fmt.Sprintf("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(up), up), true, false)
		if status, b := body(t, br); status != 200 || string(b) != fmt.Sprintf("POST /up %d", len(up)) {
			t.Errorf("status %d, body %q, want 200 and the upload's length", status, b)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("after the answer: %v, want EOF", err)
		}
		ended(t, 1)
	})
	t.Run("paused reader", func(t *testing.T) {
		c, br := ask(t, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n", false, true)
		time.Sleep(500 * time.Millisecond) // the paused reader under test, not a synchronisation
		if status, b := body(t, br); status != 200 || sha256.Sum256(b) != wantBig {
			t.Errorf("status %d, %d bytes, want 200 and the body (%d bytes) by SHA-256", status, len(b), len(big))
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("after the client's FIN: %v, want EOF", err)
		}
		ended(t, 1)
	})
	t.Run("closes the instant it has the body", func(t *testing.T) {
		c, br := ask(t, "GET /blob HTTP/1.1\r\nHost: x\r\n\r\nGET /blob HTTP/1.1\r\nHost: x\r\n\r\n", false, false)
		for i := range 2 {
			if status, b := body(t, br); status != 200 || sha256.Sum256(b) != want {
				t.Errorf("response %d: status %d, %d bytes, want 200 and the blob by SHA-256", i+1, status, len(b))
			}
		}
		c.Close()
		ended(t, 2)
	})
}

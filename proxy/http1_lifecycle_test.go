package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// bodyReader is a backend that reads a request's head, then its body to the
// end (or what there is of it), and reports how the body read ended. It
// signals arrived once it has the head and the body's first byte (or,
// for Expect: 100-continue, has answered 100 Continue).
func bodyReader(t *testing.T, arrived chan<- struct{}, ended chan<- error) string {
	return loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			ended <- err
			return
		}
		if req.Header.Get("Expect") == "100-continue" {
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		} else if _, err := req.Body.Read(make([]byte, 1)); err != nil {
			ended <- err
			return
		}
		arrived <- struct{}{} // the head, and the body's first byte unless it waits for 100 Continue
		_, err = io.Copy(io.Discard, req.Body)
		ended <- err
		if err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			io.Copy(io.Discard, br)
		}
	})
}

// A client that closes in the middle of a request head left before its
// request was complete, as one that leaves midway through a body does:
// client_aborted, not a timeout (nothing waited), and the client learns
// by a reset that it was not served. The backend sees nothing.
func TestHTTP1ClientClosesMidHead(t *testing.T) {
	for _, head := range []string{"GET /a HT", "GET / HTTP/1.1\r\nHost: x\r\n"} {
		t.Run(head, func(t *testing.T) {
			arrived, ended := make(chan struct{}, 4), make(chan error, 4)
			h := startProxy(t, config.Listener{IdleTimeout: 10 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
				http1Backend(bodyReader(t, arrived, ended)))
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, head)
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := io.ReadAll(c); len(got) != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("client read %q, %v; want a reset", got, err)
			}
			td := h.record(t)
			if td.Outcome != engine.OutcomeClientAborted || td.Front.Close != policy.CloseReset || !td.Front.Cut || td.Front.BytesIn != int64(len(head)) {
				t.Errorf("outcome %s (%v), front close %s cut %v bytes_in %d; want client_aborted, reset, cut, %d",
					td.Outcome, td.Err, td.Front.Close, td.Front.Cut, td.Front.BytesIn, len(head))
			}
			select {
			case <-arrived:
				t.Error("the backend got a request that never came whole")
			default:
			}
		})
	}
}

// A client that announces a body and leaves midway (FIN or RST), or asks
// for 100-continue and sends nothing: the request can no longer be
// answered. The record comes at once (client_aborted), the backend sees
// its request cut by an RST, and the backend connection is not kept: with
// pool.max_conns 1, the next request is still served.
func TestHTTP1AbortedRequestEndsAndFreesTheBackend(t *testing.T) {
	cases := []struct {
		name  string
		send  string
		reset bool
	}{
		{"10 of 1000 body bytes, then FIN", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789", false},
		{"10 of 1000 body bytes, then RST", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789", true},
		{"Expect: 100-continue, then FIN", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			arrived, ended := make(chan struct{}, 4), make(chan error, 4)
			be := http1Backend(bodyReader(t, arrived, ended))
			be.Pool.MaxConns = 1
			h := startProxy(t, config.Listener{IdleTimeout: 10 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, tc.send)
			select { // the head and the bytes reached the backend: now leave
			case <-arrived:
			case <-time.After(3 * time.Second):
				t.Fatal("the request never reached the backend")
			}
			if tc.reset {
				c.(*net.TCPConn).SetLinger(0)
			}
			c.Close()
			td := h.record(t) // within h.record's bound, far below idle_timeout
			if td.Outcome != engine.OutcomeClientAborted && td.Outcome != engine.OutcomeClientReset {
				t.Errorf("outcome %s (%v), want client_aborted", td.Outcome, td.Err)
			}
			// Both relays word it alike: the side that failed, then the
			// cause. A client that closes with the 100 Continue unread
			// resets: its close is then its reset (peer_reset below).
			wantEOF := !tc.reset && td.Front.Close != policy.ClosePeerReset
			if msg := fmt.Sprint(td.Err); td.Outcome == engine.OutcomeClientAborted &&
				(!strings.HasPrefix(msg, "read request body: ") || strings.Contains(msg, "copy body") ||
					wantEOF && msg != "read request body: unexpected EOF") {
				t.Errorf("error %q, want \"read request body: \" and the cause (unexpected EOF after a FIN)", msg)
			}
			if td.Back.Close != policy.CloseReset || !td.Back.Cut {
				t.Errorf("back close %s cut %v, want reset, cut", td.Back.Close, td.Back.Cut)
			}
			// After a client's RST the proxy has none left to send, and the
			// record must not claim one: the front leg says peer_reset
			// without an RST of the proxy's, or reset with one. (A client
			// that closes with bytes unread, a 100 Continue, resets too.)
			peerReset := td.Front.Close == policy.ClosePeerReset && td.Front.RSTOut < 0
			ownReset := td.Front.Close == policy.CloseReset && td.Front.RSTOut >= 0
			if !peerReset && (tc.reset || !ownReset) {
				t.Errorf("front close %s, rst_out %v (client reset %v): want peer_reset without an RST of the proxy's after the client's, else reset with one",
					td.Front.Close, td.Front.RSTOut, tc.reset)
			}
			select {
			case err := <-ended:
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("backend's body read ended with %v, want ECONNRESET", err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the backend still waits for the body")
			}
			got := roundTrips(t, h.addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", 1)
			if got[0] != "200 ok" {
				t.Errorf("next request through a pool of one: %q, want 200 ok", got[0])
			}
		})
	}
}

// A backend that reads the request and never answers: at idle_timeout the
// client gets a 504 (a whole response, not silence), the record says
// timeout, and the backend connection is reset, not returned. Also when
// the silent exchange is a keep-alive session's second, whose guard is
// the first's, stopped and restarted.
func TestHTTP1BackendNeverAnswers504(t *testing.T) {
	for _, answered := range []int{0, 1} {
		t.Run(fmt.Sprintf("after_%d_answered", answered), func(t *testing.T) {
			backendSaw := make(chan error, 1)
			be := loopback.Serve(t, func(c *net.TCPConn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for range answered {
					if _, err := http.ReadRequest(br); err != nil {
						backendSaw <- err
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
				http.ReadRequest(br)
				_, err := io.Copy(io.Discard, c)
				backendSaw <- err
			})
			h := startProxy(t, config.Listener{IdleTimeout: 300 * time.Millisecond, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
			start := time.Now()
			got := roundTrips(t, h.addr, strings.Repeat("GET / HTTP/1.1\r\nHost: x\r\n\r\n", answered+1), answered+1)
			for _, g := range got[:answered] {
				if g != "200 ok" {
					t.Errorf("answered request: client got %q, want 200 ok", g)
				}
			}
			if !strings.HasPrefix(got[answered], "504 ") {
				t.Errorf("client got %q, want a 504", got[answered])
			}
			switch el := time.Since(start); {
			case el < 300*time.Millisecond:
				t.Errorf("answered after %v: the silence was cut short of idle_timeout (300ms)", el)
			case el > 2*time.Second:
				t.Errorf("answered after %v, want about idle_timeout (300ms)", el)
			}
			td := h.record(t)
			if td.Outcome != engine.OutcomeTimeout || td.Back.Close != policy.CloseReset || td.BackRequests != answered+1 {
				t.Errorf("outcome %s back close %s, %d requests; want timeout, reset, %d", td.Outcome, td.Back.Close, td.BackRequests, answered+1)
			}
			if td.Err == nil || td.Err.Error() != "exchange stalled: no byte moved for idle_timeout 300ms" {
				t.Errorf("error %v, want the idle_timeout named alone", td.Err)
			}
			if err := <-backendSaw; !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("backend saw %v, want ECONNRESET", err)
			}
		})
	}
}

// Shutdown with an exchange still waiting for its answer: past
// shutdown_timeout the client gets a 503 and the session ends, bounded.
func TestHTTP1ShutdownCutsAWaitingExchange(t *testing.T) {
	arrived := make(chan struct{}, 1)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		arrived <- struct{}{}
		io.Copy(io.Discard, c)
	})
	h := startProxy(t, config.Listener{IdleTimeout: time.Minute, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	got := make(chan string, 1)
	go func() { got <- statusLine(h.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") }()
	<-arrived
	start := time.Now()
	if err := shutdownWithin(h, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("shutdown took %v, want shutdown_timeout plus a few seconds at most", el)
	}
	if r := <-got; !strings.HasPrefix(r, "HTTP/1.1 503 ") {
		t.Errorf("client got %q, want a 503", r)
	}
	if td := h.record(t); td.Outcome != engine.OutcomeDrained || td.Err == nil || td.Err.Error() != "cut by shutdown: still open when its wait ended (shutdown_timeout, or a second SIGTERM)" {
		t.Errorf("outcome %s (%v), want drained, cut by shutdown", td.Outcome, td.Err)
	}
}

// statusLine sends raw on a new connection and returns the first response
// line, or the error; it fails no test, so it may run on any goroutine.
func statusLine(addr, raw string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err.Error()
	}
	return strings.TrimSpace(line)
}

// shutdownWithin shuts the proxy down with shutdown_timeout d.
func shutdownWithin(h *harness, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return h.srv.Shutdown(ctx)
}

// An answer that closes the connection (Connection: close) from a backend
// that does not close at once (it waits for the proxy's FIN, as nginx
// lingers after an early answer): the proxy's FIN to the client goes with
// the answer, as the front's policy (proxy) wants, not after the back
// leg's end, which waits up to peer_fin_grace; meanwhile a client told to
// close would close first and keep the TIME-WAIT. Both relays end the two
// legs at once.
func TestHTTP1ClosingAnswerEndsBothLegsAtOnce(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		io.Copy(io.Discard, br) // until the proxy's FIN (or reset)
	})
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(be))
	// A client that reads to the proxy's FIN, and one that closes the
	// instant it has the answer (its FIN races the proxy's).
	for _, toEOF := range []bool{true, false} {
		t.Run(fmt.Sprintf("reads_to_eof=%v", toEOF), func(t *testing.T) {
			c := dialClient(t, h.addr, false)
			defer c.Close()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if toEOF && err == nil {
				_, err = br.ReadByte()
				if err == io.EOF {
					err = nil
				}
			}
			c.Close()
			if err != nil || string(body) != "ok" {
				t.Fatalf("answer %q, %v", body, err)
			}
			td := h.record(t)
			backEnd := td.Back.FINOut
			if backEnd < 0 || td.Back.RSTOut >= 0 && td.Back.RSTOut < backEnd {
				backEnd = td.Back.RSTOut
			}
			if td.Front.FINOut < 0 || backEnd < 0 || td.Front.FINOut >= backEnd || toEOF && td.Front.FirstFIN != policy.SideProxy {
				t.Errorf("front first_fin %s fin_out %v, back leg ended at %v (%s, %s): want the proxy's FIN to the client before the back leg's end (first, to a client that reads to EOF)",
					td.Front.FirstFIN, td.Front.FINOut, backEnd, td.Back.Close, td.Back.Reason)
			}
			if td.Outcome != engine.OutcomeOK {
				t.Errorf("outcome %s (%v), want ok", td.Outcome, td.Err)
			}
		})
	}
}

// A final answer to Expect: 100-continue with no 100 before it (417, or
// a 401 to an upload) owes the proxy no body (RFC 9110, 10.1.1): the
// exchange ends with it, ok and nothing cut, whether the client waits for
// the proxy's FIN or closes once answered (as curl does). A client that
// waited was held peer_fin_grace for a body it never owed and recorded
// timeout; one that closed was reset and recorded client_aborted.
func TestHTTP1ExpectContinueAnsweredWithoutA100OwesNoBody(t *testing.T) {
	for _, closes := range []bool{false, true} {
		t.Run(fmt.Sprintf("client_closes=%v", closes), func(t *testing.T) {
			be := loopback.Serve(t, func(c *net.TCPConn) {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
				io.Copy(io.Discard, br) // lingers, as nginx does, until the proxy's FIN
			})
			ln := config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}
			ln.Close.PeerFinGrace = 5 * time.Second
			h := startProxy(t, ln, http1Backend(be))
			c := dialClient(t, h.addr, false)
			defer c.Close()
			io.WriteString(c, "PUT /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 417 {
				t.Fatalf("answer %v, %v; want 417", resp, err)
			}
			if closes {
				c.Close()
			} else {
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
					t.Errorf("after the answer: %d bytes, %v; want the proxy's FIN at once", n, err)
				}
				c.Close()
			}
			td := h.record(t)
			if td.Outcome != engine.OutcomeOK || td.Front.Cut || td.Back.Cut || td.Duration >= ln.Close.PeerFinGrace {
				t.Errorf("record: outcome %s (%v), front cut %v, back cut %v, duration %v; want ok, nothing cut, within peer_fin_grace",
					td.Outcome, td.Err, td.Front.Cut, td.Back.Cut, td.Duration)
			}
		})
	}
}

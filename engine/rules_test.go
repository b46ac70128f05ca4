package engine

import (
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

// The defaults' policies, with test-sized timers.
var (
	defFront = policyClose(policy.TargetProxy, policy.FallbackFIN)
	defBack  = policyClose(policy.TargetPeer, policy.FallbackReset)
)

// policyPairs are the pairs every rule is tried under.
var policyPairs = []struct {
	name        string
	front, back config.Close
}{
	{"proxy/backend", defFront, defBack},
	{"client/backend", policyClose(policy.TargetPeer, policy.FallbackFIN), defBack},
	{"nowhere/nowhere", policyClose(policy.TargetNowhere, policy.FallbackFIN), policyClose(policy.TargetNowhere, policy.FallbackReset)},
	{"auto/auto", policyClose(policy.TargetAuto, policy.FallbackFIN), policyClose(policy.TargetAuto, policy.FallbackReset)},
	{"proxy/proxy", defFront, policyClose(policy.TargetProxy, policy.FallbackReset)},
}

// Rule 1: a client that half-closes after its request, toward a backend
// that reads to EOF before it answers: the backend gets EOF at once (never
// an RST), the client every byte and a clean end.
func TestHalfCloseTowardBackendWaitingForEOF(t *testing.T) {
	req, reqSum := payload(1000, 1)
	resp, respSum := payload(8<<20, 2)
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := relay(t, pp.front, pp.back, 5*time.Second)
			backendGot := readAllAsync(r.backend)
			clientGot := readAllAsync(r.client)
			recv(t, writeAsync(r.client, req, true), time.Second, "client request")
			b := recv(t, backendGot, 2*time.Second, "backend reads the request to EOF")
			if b.err != nil || b.sum != reqSum {
				t.Fatalf("backend read %d bytes, end %v; want the whole request and EOF", b.n, b.err)
			}
			recv(t, writeAsync(r.backend, resp, true), 5*time.Second, "backend response")
			c := recv(t, clientGot, 5*time.Second, "client reads the response")
			if c.sum != respSum || (c.err != nil && !isReset(c.err)) {
				t.Fatalf("client read %d of %d bytes, end %v", c.n, len(resp), c.err)
			}
			td := r.wait(t, 5*time.Second)
			if td.Outcome != OutcomeOK || td.Front.Cut || td.Back.Cut {
				t.Errorf("outcome %s, cut front %v back %v: want ok, nothing cut", td.Outcome, td.Front.Cut, td.Back.Cut)
			}
			if pp.back.TimeWait != policy.TargetProxy && td.Back.Reason != policy.ReasonAwaitsEOF {
				t.Errorf("back.reason %q, want %q", td.Back.Reason, policy.ReasonAwaitsEOF)
			}
		})
	}
}

// Rule 2: the client half-closes, the backend sends 8 MB at once, the
// client pauses reading for longer than the grace: the backend is blocked
// by the proxy's full buffers, not silent, and nothing is cut.
func TestPausedReaderIsNotSilence(t *testing.T) {
	req, _ := payload(100, 3)
	resp, respSum := payload(8<<20, 4)
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := relay(t, pp.front, pp.back, 5*time.Second)
			// The backend answers as soon as the request is in, before the
			// client's FIN: it has spoken last when the FIN arrives.
			recv(t, writeAsync(r.client, req, false), time.Second, "client request")
			if _, err := io.ReadFull(r.backend, make([]byte, len(req))); err != nil {
				t.Fatal(err)
			}
			backendRest := readAllAsync(r.backend)
			sent := writeAsync(r.backend, resp, true)
			_ = r.client.CloseWrite()
			time.Sleep(1500 * time.Millisecond) // the paused reader under test: longer than peer_fin_grace
			c := readAll(r.client)
			if c.sum != respSum || c.err != nil && !isReset(c.err) {
				t.Fatalf("client read %d of %d bytes (end %v)", c.n, len(resp), c.err)
			}
			recv(t, sent, 5*time.Second, "backend write")
			// Under nowhere the backend's own FIN is answered by a safe
			// reset: ECONNRESET after every byte, not EOF.
			b := recv(t, backendRest, 5*time.Second, "backend's end")
			if b.n != 0 || b.err != nil && !(isReset(b.err) && pp.back.TimeWait == policy.TargetNowhere) {
				t.Errorf("backend read %d more bytes, then %v", b.n, b.err)
			}
			td := r.wait(t, 5*time.Second)
			if td.Outcome != OutcomeOK {
				t.Errorf("outcome %s (%v), want ok", td.Outcome, td.Err)
			}
		})
	}
}

// Half-close the other way: the backend sends 1 MB and half-closes while
// the client is still uploading 16 MB. The upload is not cut: the backend
// reads every byte and EOF.
func TestUploadAfterBackendHalfClose(t *testing.T) {
	up, upSum := payload(16<<20, 5)
	down, downSum := payload(1<<20, 6)
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := relay(t, pp.front, pp.back, 5*time.Second)
			backendGot := readAllAsync(r.backend)
			clientGot := readAllAsync(r.client)
			recv(t, writeAsync(r.backend, down, true), 5*time.Second, "backend's 1 MB")
			c := recv(t, clientGot, 5*time.Second, "client's download")
			if c.sum != downSum || c.err != nil && !isReset(c.err) {
				t.Fatalf("client read %d of %d bytes, then %v", c.n, len(down), c.err)
			}
			// Slowly enough that the upload outlasts the grace.
			for i := 0; i < len(up); i += 1 << 20 {
				if _, err := r.client.Write(up[i : i+1<<20]); err != nil {
					t.Fatalf("upload cut after %d bytes: %v", i, err)
				}
				time.Sleep(40 * time.Millisecond)
			}
			_ = r.client.CloseWrite()
			b := recv(t, backendGot, 5*time.Second, "backend's upload")
			if b.sum != upSum || b.err != nil && !(isReset(b.err) && pp.back.TimeWait == policy.TargetNowhere) {
				t.Fatalf("backend read %d of %d bytes, then %v", b.n, len(up), b.err)
			}
			td := r.wait(t, 5*time.Second)
			if td.Outcome != OutcomeOK || td.Front.Cut || td.Back.Cut {
				t.Errorf("outcome %s (%v), cut %v/%v: want ok", td.Outcome, td.Err, td.Front.Cut, td.Back.Cut)
			}
		})
	}
}

// Rules 4 and 5: a backend that never answers a half-closed request: at
// idle_timeout both legs are reset at once, the client sees an RST (not a
// clean EOF), and the record says timeout, front cut.
func TestIdleTimeoutCutsBothLegs(t *testing.T) {
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := relay(t, pp.front, pp.back, 400*time.Millisecond)
			backendGot := readAllAsync(r.backend)
			clientGot := readAllAsync(r.client)
			start := time.Now()
			recv(t, writeAsync(r.client, []byte("GET / HTTP/1.0\r\n\r\n"), true), time.Second, "request")
			c := recv(t, clientGot, 3*time.Second, "client's end")
			if !isReset(c.err) {
				t.Errorf("client's stream ended with %v after %d bytes, want an RST", c.err, c.n)
			}
			b := recv(t, backendGot, 3*time.Second, "backend's end")
			if b.n != 18 {
				t.Errorf("backend read %d bytes, want the 18 of the request", b.n)
			}
			td := r.wait(t, 3*time.Second)
			if el := time.Since(start); el > 1500*time.Millisecond {
				t.Errorf("session ended after %v, want about idle_timeout (400ms)", el)
			}
			if td.Outcome != OutcomeTimeout || !td.Front.Cut || td.Front.Close != policy.CloseReset {
				t.Errorf("outcome %s, front close %s cut %v: want timeout, reset, cut", td.Outcome, td.Front.Close, td.Front.Cut)
			}
		})
	}
}

// Rule 4: a backend that resets mid-response: the client gets an RST, not
// a FIN that would make the truncated stream look whole.
func TestBackendResetReachesClientAsReset(t *testing.T) {
	resp, _ := payload(256<<10, 7)
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := relay(t, pp.front, pp.back, 5*time.Second)
			clientGot := readAllAsync(r.client)
			recv(t, writeAsync(r.client, []byte("req"), false), time.Second, "request")
			if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
				t.Fatal(err)
			}
			recv(t, writeAsync(r.backend, resp, false), 5*time.Second, "part of the response")
			_ = r.backend.SetLinger(0)
			_ = r.backend.Close()
			c := recv(t, clientGot, 3*time.Second, "client's end")
			if !isReset(c.err) {
				t.Errorf("client's stream ended with %v after %d bytes, want an RST", c.err, c.n)
			}
			td := r.wait(t, 3*time.Second)
			if td.Outcome != OutcomeBackendReset || !td.Front.Cut || td.Back.Close != policy.ClosePeerReset {
				t.Errorf("outcome %s, front cut %v, back close %s: want backend_reset, cut, peer_reset", td.Outcome, td.Front.Cut, td.Back.Close)
			}
		})
	}
}

// Shutdown cuts a transfer still under way: the client gets an RST, not an
// early clean EOF, and the record says drained, cut.
func TestDrainCutsTransferInFlight(t *testing.T) {
	for _, pp := range policyPairs {
		t.Run(pp.name, func(t *testing.T) {
			r := relay(t, pp.front, pp.back, 5*time.Second)
			stop := make(chan struct{})
			streamed := make(chan struct{})
			go func() { // a backend streaming until stopped
				defer close(streamed)
				chunk := make([]byte, 64<<10)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := r.backend.Write(chunk); err != nil {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
			// The transfer is under way once the client has its first byte.
			_ = r.client.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.ReadFull(r.client, make([]byte, 1)); err != nil {
				t.Fatalf("client's first byte: %v", err)
			}
			_ = r.client.SetReadDeadline(time.Time{})
			clientGot := readAllAsync(r.client)
			close(r.drain)
			c := recv(t, clientGot, 3*time.Second, "client's end")
			close(stop)
			<-streamed
			if !isReset(c.err) {
				t.Errorf("client's stream ended with %v after %d bytes, want an RST", c.err, 1+c.n)
			}
			td := r.wait(t, 3*time.Second)
			if td.Outcome != OutcomeDrained || !td.Front.Cut {
				t.Errorf("outcome %s, front cut %v: want drained, cut", td.Outcome, td.Front.Cut)
			}
		})
	}
}

// Rules 1 and 3 together, with the adaptive grace: a client half-closes
// right after its request and still reads. A backend that reads to EOF
// gets the FIN within the 50 ms probe; a backend that answers, pauses
// longer than the grace, then answers more is never cut: the grace ends
// with a FIN (the client still reads what the backend may send), not a
// reset, and the client gets every byte and a clean EOF.
func TestHalfClosedClientNeverLosesAPausingBackend(t *testing.T) {
	part, _ := payload(256<<10, 9)
	whole := append(append([]byte{}, part...), part...)
	wholeSum := sha256.Sum256(whole)
	back := policyClose(policy.TargetPeer, policy.FallbackReset)
	back.AdaptiveGrace, back.PeerFinGrace = true, time.Second
	for _, waits := range []bool{true, false} {
		r := relay(t, defFront, back, 5*time.Second)
		clientGot := readAllAsync(r.client)
		recv(t, writeAsync(r.client, []byte("req"), true), time.Second, "request")
		if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if waits {
			io.Copy(io.Discard, r.backend) // reads to EOF before it answers
		}
		eof := time.Since(start)
		r.backend.Write(part)
		time.Sleep(300 * time.Millisecond) // the backend's pause under test: longer than the grace
		r.backend.Write(part)
		r.backend.CloseWrite()
		c := recv(t, clientGot, 5*time.Second, "client's read")
		if c.sum != wholeSum || c.err != nil {
			t.Errorf("waits %v: client read %d of %d bytes, then %v; want all and EOF", waits, c.n, len(whole), c.err)
		}
		io.Copy(io.Discard, r.backend)
		r.backend.Close()
		td := r.wait(t, 5*time.Second)
		switch {
		case td.Outcome != OutcomeOK || td.Front.Cut || td.Back.Cut:
			t.Errorf("waits %v: outcome %s, cut %v/%v; want ok, nothing cut", waits, td.Outcome, td.Front.Cut, td.Back.Cut)
		case waits && (td.Back.Reason != policy.ReasonAwaitsEOF || eof >= back.PeerFinGrace):
			// The reason says the probe sent the FIN; the bound only that
			// it came before the grace could have (a loaded machine delays
			// a 50 ms timer by hundreds of milliseconds).
			t.Errorf("EOF-waiting backend: reason %q, EOF after %v; want peer_may_await_eof, sooner than the grace (%v)", td.Back.Reason, eof, back.PeerFinGrace)
		case !waits && td.Back.Reason != policy.ReasonOtherReading:
			t.Errorf("answering backend: reason %q, want other_side_reading (a FIN, never a reset, after the grace)", td.Back.Reason)
		}
	}
}

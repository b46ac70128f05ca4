package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// An idle keep-alive connection in http1 mode is closed as soon as
// draining begins, by Drain as by Shutdown (SIGTERM), not after
// shutdown_timeout or idle_timeout: the record says ok, reason draining,
// the client reads a plain EOF. New connections are refused at once.
func TestDrainClosesIdleKeepAliveAtOnce(t *testing.T) {
	for _, how := range []string{"Drain", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			o := startOrigin(t, hello)
			h := startProxy(t, config.Listener{IdleTimeout: 30 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
			c, br := loopback.KeepAliveGet(t, h.addr, "/a")
			t0 := time.Now()
			if how == "Drain" {
				h.srv.Drain()
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				stopped := make(chan struct{})
				go func() { h.srv.Shutdown(ctx); close(stopped) }()
				// ends before the test does (goleak)
				defer func() { <-stopped }()
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := br.ReadByte(); err != io.EOF {
				t.Fatalf("read after drain: %v %v, want EOF", n, err)
			}
			if d := time.Since(t0); d > time.Second {
				t.Errorf("the idle client read EOF %s after draining began", d)
			}
			c.Close() // as a keep-alive client does on EOF
			td := h.record(t)
			if td.Outcome != engine.OutcomeOK || td.Front.Reason != policy.ReasonDraining || td.Front.Cut {
				t.Errorf("outcome %s front reason %q cut %v, want ok, draining, not cut", td.Outcome, td.Front.Reason, td.Front.Cut)
			}
			select {
			case <-h.srv.Drained():
			case <-time.After(5 * time.Second):
				t.Fatalf("Drained not closed; %d sessions live", h.srv.Live())
			}
			if h.srv.Serving() {
				t.Error("still Serving while draining")
			}
			if c2, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
				c2.Close()
				t.Error("a new connection was accepted while draining")
			}
		})
	}
}

// A busy keep-alive connection: the response to the request in flight when
// draining begins says Connection: close, and the session then ends with
// outcome ok; nothing is cut.
func TestDrainBusyAnswersConnectionClose(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		hello(w, r)
	})
	h := startProxy(t, config.Listener{IdleTimeout: 30 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	c, br := loopback.KeepAliveGet(t, h.addr, "/a")
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	h.srv.Drain()
	close(release)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "GET /slow 0" {
		t.Errorf("response %d %q", resp.StatusCode, body)
	}
	if !resp.Close { // net/http takes "Connection: close" out of the header into Close
		t.Errorf("response without Connection: close (header %v)", resp.Header)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the response: %v, want EOF", err)
	}
	c.Close()
	td := h.record(t)
	if td.Outcome != engine.OutcomeOK || td.Front.Reason != policy.ReasonDraining || td.Front.Cut {
		t.Errorf("outcome %s front reason %q cut %v, want ok, draining, not cut", td.Outcome, td.Front.Reason, td.Front.Cut)
	}
}

// Reload is refused once draining began: it would bind listeners again.
func TestReloadRefusedWhileDraining(t *testing.T) {
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, defaultBackend(httpBackend(t, false)))
	h.srv.Drain()
	h.srv.mu.Lock()
	cfg := h.srv.cfg
	h.srv.mu.Unlock()
	if err := h.srv.Reload(context.Background(), cfg); err == nil {
		t.Error("reload accepted while draining")
	}
}

// Shutdown called from two goroutines at once, both past their deadline
// with a session still relaying, runs the sequence once: both return, the
// session is cut with one record, and nothing races (-race) or panics.
func TestShutdownTwiceAtOnce(t *testing.T) {
	be, arrived := arrivingBackend(t)
	h := startProxy(t, config.Listener{IdleTimeout: 30 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Address: be, Close: testClose(policy.TargetPeer, policy.FallbackReset)})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "flowing"); err != nil {
		t.Fatal(err)
	}
	// Only a session relaying has a record to give. Dial returns once the
	// connection is in the listen backlog; a Shutdown before the accept
	// loop took it resets it unrecorded (seen 14 in 300 runs with
	// relay = "loop", whose Serve starts the loops before accepting).
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the session relayed nothing to the backend")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // both calls find shutdown_timeout over
	done := make(chan struct{}, 2)
	for range 2 {
		go func() { h.srv.Shutdown(ctx); done <- struct{}{} }()
	}
	for range 2 {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a Shutdown did not return")
		}
	}
	if td := h.record(t); td.Outcome != engine.OutcomeDrained {
		t.Errorf("outcome %s, want drained", td.Outcome)
	}
}

// Draining meets peers that are not polite: a client that half-closes
// right after its request, and a reader that pauses mid-response, each with
// a 4 MiB answer in flight when draining begins. Each reads the whole body
// (SHA-256 equal) and then EOF, and the records say ok, nothing cut.
func TestDrainLetsHostileReadersFinish(t *testing.T) { drainHostileReaders(t) }

// The same with the sessions' watchers running late, as a loaded host
// may run them: here at every moment from the drain to the session's
// end. A watcher that fires once its session is ending the front leg
// must leave that leg alone (a read deadline set then cut a response
// still in flight with an RST, recorded as error).
func TestDrainLateWatchersLeaveEndingSessionsAlone(t *testing.T) {
	watch = func(ctx context.Context, f func()) func() bool {
		done := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			for {
				f()
				select {
				case <-done:
					return
				case <-time.After(time.Millisecond): // a watcher as late as any moment: the input under test
				}
			}
		})
		return func() bool {
			close(done)
			return stop()
		}
	}
	t.Cleanup(func() { watch = context.AfterFunc })
	drainHostileReaders(t)
}

func drainHostileReaders(t *testing.T) {
	body := make([]byte, 4<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	want := sha256.Sum256(body)
	started := make(chan struct{}, 2)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:64<<10])
		w.(http.Flusher).Flush()
		started <- struct{}{}
		w.Write(body[64<<10:])
	})
	h := startProxy(t, config.Listener{IdleTimeout: 30 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	type got struct {
		sum [32]byte
		err error
	}
	results := make(chan got, 2)
	for _, halfClose := range []bool{true, false} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		if halfClose {
			c.(*net.TCPConn).CloseWrite() // the client that is done sending at once
		}
		go func() {
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				results <- got{err: err}
				return
			}
			if !halfClose {
				time.Sleep(300 * time.Millisecond) // the paused reader under test, not a synchronisation
			}
			hash := sha256.New()
			if _, err := io.Copy(hash, resp.Body); err != nil {
				results <- got{err: err}
				return
			}
			var g got
			copy(g.sum[:], hash.Sum(nil))
			if _, g.err = br.ReadByte(); g.err == io.EOF {
				g.err = nil
			} else if g.err == nil {
				g.err = errors.New("bytes after the response, want EOF")
			}
			c.Close() // as a client does at EOF
			results <- g
		}()
	}
	for range 2 {
		<-started
	}
	h.srv.Drain()
	for range 2 {
		if g := <-results; g.err != nil || g.sum != want {
			t.Errorf("a client's response during the drain: sha256 match %v, %v; want the whole body, then EOF", g.sum == want, g.err)
		}
	}
	for range 2 {
		if td := h.record(t); td.Outcome != engine.OutcomeOK || td.Front.Cut || td.Back.Cut {
			t.Errorf("record: outcome %s, cut front %v back %v; want ok, nothing cut", td.Outcome, td.Front.Cut, td.Back.Cut)
		}
	}
}

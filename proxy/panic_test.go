package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// panicOnce is an Observer whose first Dialed panics: the pool dials on
// the session's goroutine (warm = 0), so the panic unwinds through a live
// session, the only seam the public API offers into one.
type panicOnce struct {
	nopObserver
	fired atomic.Bool
}

func (p *panicOnce) Dialed(string, time.Duration, error) {
	if p.fired.CompareAndSwap(false, true) {
		panic("test: observer panics inside a session")
	}
}

// TestSessionPanicRecovered: a panic inside one session is recovered into
// one record with outcome internal_error, the client's connection is
// ended, and the next connection is served as usual.
func TestSessionPanicRecovered(t *testing.T) {
	backendGotEOF := make(chan bool, 4)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 512)
		n, err := c.Read(b)
		if n == 0 {
			backendGotEOF <- !errors.Is(err, os.ErrDeadlineExceeded)
			return
		}
		_, _ = io.WriteString(c, response)
		_ = c.CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	obs := &panicOnce{}
	h := startProxyWith(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)},
		config.Backend{Address: be, Close: testClose(policy.TargetPeer, policy.FallbackReset)}, []Option{WithObserver(obs)})

	got, err := exchange(t, h.addr, "GET / HTTP/1.1\r\n\r\n")
	td := h.record(t)
	if td.Outcome != engine.OutcomeInternalError || td.Err == nil || !strings.Contains(td.Err.Error(), "panic: test: observer panics") {
		t.Fatalf("record: outcome %s error %v, want internal_error with the panic", td.Outcome, td.Err)
	}
	if got != "" {
		t.Errorf("client of the panicking session read %q, want nothing", got)
	}
	t.Logf("panicking session: client read %q (%v); record front.close %s, front.rst_out_ms %v", got, err, td.Front.Close, td.Front.RSTOut)
	if td.Front.Close != policy.CloseReset {
		t.Errorf("the recovery resets the client's connection (SO_LINGER 0, Close) but the record says front.close %q, not %q", td.Front.Close, policy.CloseReset)
	}

	got, err = exchange(t, h.addr, "GET / HTTP/1.1\r\n\r\n")
	if td := h.record(t); td.Outcome != engine.OutcomeOK || got != response {
		t.Fatalf("after the panic: outcome %s, client read %q (%v); want ok and the response", td.Outcome, got, err)
	}
	if st := h.srv.PoolStats()["app"]; st.InUse != 0 {
		t.Errorf("after a panic in the dial, the pool counts %d connection(s) in use for good: want the slot freed", st.InUse)
	}
	select {
	case eof := <-backendGotEOF:
		if !eof {
			t.Errorf("the backend connection dialed when the panic struck was not closed (the backend read nothing for 2s)")
		}
	case <-time.After(3 * time.Second):
		t.Error("the backend never saw the connection dialed when the panic struck end")
	}
}

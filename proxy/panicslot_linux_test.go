package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// A panic in an http1 exchange while it holds its backend connection is
// recovered into internal_error, and the connection is reset and its
// pool slot freed: with max_conns 1, the next request is answered. The
// slot was held for good (and on a goroutine the backend socket stayed
// open): every later request got 503 pool_exhausted. On a goroutine
// (an upgrade with a body goes to one on either relay), and on the
// loops, as an exchange takes its connection.
func TestHTTP1PanicFreesTheBackendSlot(t *testing.T) {
	cases := []struct {
		name, req string
		loops     bool
		set       func(func())
	}{
		{"goroutine", "POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: x\r\nContent-Length: 2\r\n\r\nhi", false,
			func(f func()) { exchangeHeldHook = f }},
		{"loop", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", true,
			func(f func()) { loopExchangeHook = f }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.loops && testRelay != "loop" {
				t.Skip("the loops' exchange")
			}
			ended := make(chan struct{}, 8) // a backend connection's end
			be := answerEach(t, func(string) []byte { return []byte("ok") }, ended)
			var fire atomic.Bool
			c.set(func() {
				if fire.CompareAndSwap(true, false) {
					panic("test: a panic while the exchange holds its backend connection")
				}
			})
			t.Cleanup(func() { c.set(nil) })
			b := http1Backend(be)
			b.Pool.MaxConns = 1
			h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
			ask := func(req string) (int, string) {
				cl := dialClient(t, h.addr, false)
				defer cl.Close()
				io.WriteString(cl, req)
				resp, err := http.ReadResponse(bufio.NewReader(cl), nil)
				if err != nil {
					return 0, err.Error()
				}
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body)
			}
			const get = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
			if status, body := ask(get); status != 200 || body != "ok" {
				t.Fatalf("first request: %d %q", status, body)
			}
			h.record(t)
			fire.Store(true)
			ask(c.req)
			if td := h.record(t); td.Outcome != engine.OutcomeInternalError || !strings.Contains(td.Err.Error(), "test: a panic") {
				t.Fatalf("the panicking request's record: %s (%v), want internal_error", td.Outcome, td.Err)
			}
			if fire.Load() {
				t.Fatal("the hook never ran: the test proves nothing")
			}
			// The pool's one connection served both requests; the panic's
			// recovery closes it.
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatal("the panicking exchange's backend connection still open after 5s")
			}
			if st := h.srv.PoolStats()["app"]; st.InUse != 0 {
				t.Errorf("after the recovered panic the pool counts %d connection(s) in use, want 0", st.InUse)
			}
			if status, body := ask(get); status != 200 || body != "ok" {
				td := h.record(t)
				t.Fatalf("the next request (max_conns 1): %d %q, record %s (%v); want 200 ok", status, body, td.Outcome, td.Err)
			}
			h.record(t)
		})
	}
}

package proxy

import (
	"bufio"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// A chunked request body is held with its head, to refuse a malformed one
// before the backend sees a byte, but not for longer than spillAfter: a
// client that trickles it held the backend connection it took, with the
// backend seeing nothing (its own timeouts could not act), for as long as
// it kept a byte coming within idle_timeout, or until idle_timeout if it
// stopped. Once the hold's time passed, the request goes, and the body
// streams whole.
func TestHTTP1TrickledChunkedBodyIsNotHeldLong(t *testing.T) {
	old := spillAfter
	spillAfter = 100 * time.Millisecond
	t.Cleanup(func() { spillAfter = old })
	heads := make(chan struct{}, 1)
	o := startOrigin(t, func(w http.ResponseWriter, r *http.Request) {
		heads <- struct{}{} // the head came: the handler runs before the body
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	})
	h := startProxy(t, config.Listener{IdleTimeout: 10 * time.Second, Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	c := dialClient(t, h.addr, false)
	// One chunk, then silence: the hold's time passing sends the request
	// with no byte more from the client.
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
	select {
	case <-heads:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend saw nothing of a request held past the hold's time")
	}
	io.WriteString(c, "1\r\nb\r\n0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	c.Close()
	if string(body) != "ab" {
		t.Errorf("the backend got body %q, want \"ab\"", body)
	}
	if td := h.record(t); td.Outcome != engine.OutcomeOK {
		t.Errorf("record: %s (%v), want ok", td.Outcome, td.Err)
	}
}

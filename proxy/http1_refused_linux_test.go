package proxy

import (
	"fmt"
	"net"
	"testing"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/policy"
)

// A client that closes its socket right after its request, before the
// answer: its kernel refuses the answer with an RST (or resets at once,
// if the answer came before its close, with it unread), and holds no
// TIME-WAIT. The proxy's FIN goes after the client's, with the answer or
// after it, so the record must say the client's reset: a closing answer
// (HTTP/1.0) ended on the exchange's path, and a keep-alive one whose
// client's FIN the proxy reads between requests.
func TestHTTP1AnswerToAClosedClientIsItsReset(t *testing.T) {
	o, _ := framedOrigin(t)
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, http1Backend(o.addr))
	for _, req := range []string{
		"GET /length/200 HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET /length/200 HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprint(c, req); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		td := h.record(t)
		if td.Outcome != engine.OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || td.Front.TimeWait != policy.SideNone {
			t.Errorf("%q: record %s (%v), front close %s, time_wait %s; want client_reset, peer_reset, none",
				req, td.Outcome, td.Err, td.Front.Close, td.Front.TimeWait)
		}
	}
}

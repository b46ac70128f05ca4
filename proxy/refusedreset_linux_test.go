package proxy

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A client that resets while its session waits for a backend connection
// (max_conns reached) is refused only at connect_timeout: its record says
// the client's reset (client_reset, front close peer_reset, no RST of
// the proxy's, which its close could not send), with the refusal it
// preempted in the error. It said pool_exhausted and an RST of the
// proxy's at connect_timeout.
func TestClientResetWhileRefusedIsTheClients(t *testing.T) {
	be := loopback.Serve(t, func(c *net.TCPConn) { io.Copy(c, c) })
	b := defaultBackend(be)
	b.Pool.MaxConns = 1
	b.ConnectTimeout = 300 * time.Millisecond
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)

	holder := dialClient(t, h.addr, false) // takes the one backend connection
	io.WriteString(holder, "x")
	if _, err := io.ReadFull(holder, make([]byte, 1)); err != nil {
		t.Fatalf("the first client's echo: %v", err)
	}
	late := dialClient(t, h.addr, false)
	late.SetLinger(0)
	late.Close() // an RST while its session waits for the pool

	td := h.record(t)
	if td.Outcome != engine.OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || td.Front.RSTOut >= 0 ||
		!strings.Contains(td.Err.Error(), string(engine.OutcomePoolExhausted)) {
		t.Errorf("record: outcome %s (%v), front close %s rst_out_ms %v; want client_reset naming pool_exhausted, peer_reset, no RST of the proxy's",
			td.Outcome, td.Err, td.Front.Close, td.Front.RSTOut)
	}
	holder.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK {
		t.Errorf("the first client's record: %s (%v), want ok", td.Outcome, td.Err)
	}
}

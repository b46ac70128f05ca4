package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A session still dialing its backend (a blackholed one: its SYNs are
// dropped) when shutdown_timeout runs out ends then, recorded drained, and
// Shutdown returns within its bound, whatever connect_timeout says, in
// tcp and http1 mode on both relays. The dial ran on to connect_timeout
// (30 s here): shutdown waited for its record past its bound, and the
// daemon gave up on it, exiting 1 and blaming the records sink.
func TestShutdownCutsADialUnderWay(t *testing.T) {
	for _, protocol := range []config.Protocol{config.ProtocolTCP, config.ProtocolHTTP1} {
		t.Run(string(protocol), func(t *testing.T) {
			full, _ := loopback.FullQueue(t)
			be := defaultBackend(full.String())
			be.Protocol = protocol
			be.ConnectTimeout = 30 * time.Second
			h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, be)
			c, err := net.Dial("tcp", h.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "the session's dial", func() bool { return h.srv.PoolStats()["app"].InUse > 0 }) // no event tells a dial began
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			h.srv.Shutdown(ctx)
			if took, bound := time.Since(start), 100*time.Millisecond+h.srv.ShutdownBound(); took > bound {
				t.Errorf("Shutdown took %v, past its bound %v: it waited for the dial", took, bound)
			}
			if td := h.record(t); td.Outcome != engine.OutcomeDrained {
				t.Errorf("record: %s (%v), want drained", td.Outcome, td.Err)
			}
		})
	}
}

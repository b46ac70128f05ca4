package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// waitingProxy is a proxy in front of an echo backend whose one pooled
// connection (max_conns 1) a first client holds, with the given
// connect_timeout: the next client's session waits for the pool.
func waitingProxy(t *testing.T, connectTimeout time.Duration) (h *harness, holder *net.TCPConn) {
	be := loopback.Serve(t, loopback.Echo)
	b := defaultBackend(be)
	b.Pool.MaxConns = 1
	b.ConnectTimeout = connectTimeout
	h = startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
	holder = dialClient(t, h.addr, false)
	io.WriteString(holder, "x")
	if _, err := io.ReadFull(holder, make([]byte, 1)); err != nil {
		t.Fatalf("the first client's echo: %v", err)
	}
	return h, holder
}

// untilWaiting returns once a session waits for h's backend pool.
func untilWaiting(t *testing.T, h *harness) {
	waitFor(t, 10*time.Second, "a session waiting for the pool", func() bool { return h.srv.PoolStats()["app"].Waiting > 0 })
}

// A client that resets while its session waits for a backend connection
// (max_conns reached) ends the wait at once: its record says the client's
// reset (client_reset, front close peer_reset, no RST of the proxy's,
// which its close could not send) and names the wait. The session waited
// out connect_timeout (here 30 s) for a client already gone.
func TestClientResetWhileWaitingForThePoolEndsTheWait(t *testing.T) {
	h, holder := waitingProxy(t, 30*time.Second)
	late := dialClient(t, h.addr, false)
	untilWaiting(t, h)
	late.SetLinger(0)
	late.Close() // an RST while its session waits for the pool

	td := h.record(t) // within 10 s
	if td.Outcome != engine.OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || td.Front.RSTOut >= 0 ||
		td.Err == nil || !strings.Contains(td.Err.Error(), "waited for a backend connection") {
		t.Errorf("record: outcome %s (%v), front close %s rst_out_ms %v; want client_reset naming the wait, peer_reset, no RST of the proxy's",
			td.Outcome, td.Err, td.Front.Close, td.Front.RSTOut)
	}
	if w := h.srv.PoolStats()["app"].Waiting; w != 0 {
		t.Errorf("%d sessions still wait for the pool", w)
	}
	holder.Close()
	if td := h.record(t); td.Outcome != engine.OutcomeOK {
		t.Errorf("the first client's record: %s (%v), want ok", td.Outcome, td.Err)
	}
}

// A client that half-closes while its session waits for a backend
// connection keeps its request: the session goes on waiting, and once a
// slot frees every byte goes through and the whole answer comes back.
// Where the wait runs out instead, the refusal's record shows the FIN
// that came (fin_in_ms), not a leg the client never ended.
func TestClientFINWhileWaitingForThePool(t *testing.T) {
	t.Run("served", func(t *testing.T) {
		h, holder := waitingProxy(t, 10*time.Second)
		late := dialClient(t, h.addr, false)
		untilWaiting(t, h)
		payload := make([]byte, 100<<10)
		rand.Read(payload)
		if _, err := late.Write(payload); err != nil {
			t.Fatal(err)
		}
		late.CloseWrite()
		holder.Close() // frees the slot
		if td := h.record(t); td.Outcome != engine.OutcomeOK {
			t.Errorf("the first client's record: %s (%v), want ok", td.Outcome, td.Err)
		}
		got, err := io.ReadAll(late)
		if err != nil || !bytes.Equal(got, payload) {
			t.Errorf("echo: %d of %d bytes (sha256 %x, sent %x), err %v", len(got), len(payload), sha256.Sum256(got), sha256.Sum256(payload), err)
		}
		late.Close()
		td := h.record(t)
		if td.Outcome != engine.OutcomeOK || td.Front.FINIn < 0 || td.Front.BytesIn != int64(len(payload)) || td.Back.BytesIn != int64(len(payload)) {
			t.Errorf("record: outcome %s (%v), front fin_in %v bytes_in %d, back bytes_in %d; want ok, the FIN and %d bytes each way",
				td.Outcome, td.Err, td.Front.FINIn, td.Front.BytesIn, td.Back.BytesIn, len(payload))
		}
	})
	t.Run("refused", func(t *testing.T) {
		h, holder := waitingProxy(t, 300*time.Millisecond)
		defer holder.Close()
		late := dialClient(t, h.addr, false)
		untilWaiting(t, h)
		io.WriteString(late, "request")
		late.CloseWrite()
		td := h.record(t)
		if td.Outcome != engine.OutcomePoolExhausted || td.Front.Close != policy.CloseReset ||
			td.Front.FINIn < 0 || td.Front.FINIn > td.Duration {
			t.Errorf("record: outcome %s (%v), front close %s fin_in %v (duration %v); want pool_exhausted, rst, the client's FIN within the session",
				td.Outcome, td.Err, td.Front.Close, td.Front.FINIn, td.Duration)
		}
	})
}

// An http1 client that resets while its request waits for a backend
// connection ends the wait at once too: its record says its reset.
func TestHTTP1ClientResetWhileWaitingForThePool(t *testing.T) {
	release, arrived := make(chan struct{}), make(chan struct{}, 1)
	be := loopback.Serve(t, func(c *net.TCPConn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		arrived <- struct{}{}
		<-release // the first request holds the one connection
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	b := http1Backend(be)
	b.Pool.MaxConns = 1
	b.ConnectTimeout = 30 * time.Second
	h := startProxy(t, config.Listener{Close: testClose(policy.TargetProxy, policy.FallbackFIN)}, b)
	holder := dialClient(t, h.addr, false)
	defer holder.Close()
	io.WriteString(holder, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived // the holder's request has the connection
	late := dialClient(t, h.addr, false)
	io.WriteString(late, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	untilWaiting(t, h)
	late.SetLinger(0)
	late.Close()

	td := h.record(t) // within 10 s
	if td.Outcome != engine.OutcomeClientReset || td.Front.Close != policy.ClosePeerReset || td.Front.RSTOut >= 0 {
		t.Errorf("record: outcome %s (%v), front close %s rst_out_ms %v; want client_reset, peer_reset, no RST of the proxy's",
			td.Outcome, td.Err, td.Front.Close, td.Front.RSTOut)
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(holder), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the first client's answer: %v %v", resp, err)
	}
}

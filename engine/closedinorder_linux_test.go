package engine

import (
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// A back leg whose FINs went both ways in order is closed in the kernel
// (TIME-WAIT) before the proxy has read the backend's last bytes, because
// the client does not read them; then the client resets. The kernel's
// closed state is no reset by the backend: the record says client_reset,
// and the back leg's FIN exchange with its TIME-WAIT where the kernel
// holds it, not a peer_reset that would claim no TIME-WAIT at all.
func TestBackLegClosedInOrderIsNoBackendReset(t *testing.T) {
	resp, _ := payload(96<<10, 3)
	ends := policyClose(policy.TargetProxy, policy.FallbackFIN) // the proxy's FIN goes first on each leg
	r := startTuned(t, loopback.Listener(t), loopback.Listener(t), ends, ends, 5*time.Second,
		func(front, back *net.TCPConn) {
			_ = front.SetWriteBuffer(4 << 10) // the answer stalls toward the client...
			_ = back.SetReadBuffer(1 << 20)   // ...and waits whole, with the FIN, in the back leg's queue
		})
	t.Cleanup(func() { r.client.Close(); r.backend.Close() })
	_ = r.client.SetReadBuffer(4 << 10)

	recv(t, writeAsync(r.client, []byte("req"), true), time.Second, "request and FIN")
	if got, err := io.ReadAll(r.backend); err != nil || string(got) != "req" {
		t.Fatalf("backend read %q, %v; want req, then the proxy's FIN", got, err)
	}
	recv(t, writeAsync(r.backend, resp, true), 5*time.Second, "answer and FIN")
	// The proxy's end of the back leg reaches TIME-WAIT once the backend's
	// FIN is in: only the kernel can tell when.
	back := loopback.AddrPort(r.backend.RemoteAddr())
	backend := loopback.AddrPort(r.backend.LocalAddr())
	waitState(t, back, backend, sockdiag.TimeWait)

	_ = r.client.SetLinger(0)
	_ = r.client.Close()
	td := r.wait(t, 5*time.Second)
	if td.Outcome != OutcomeClientReset || td.Front.Close != policy.ClosePeerReset {
		t.Errorf("record %s (%v), front close %s; want client_reset, peer_reset", td.Outcome, td.Err, td.Front.Close)
	}
	if td.Back.Close != policy.CloseFIN || td.Back.Cut || td.Back.FINIn < 0 || td.Back.FINOut < 0 {
		t.Errorf("back leg close %s cut %v, FINs in %d out %d; want fin, not cut, both FINs", td.Back.Close, td.Back.Cut, td.Back.FINIn, td.Back.FINOut)
	}
	if s := td.Back.TimeWait; s != policy.SideProxy && s != policy.SideUnknown {
		t.Errorf("back leg time_wait %s; the kernel holds it on the proxy's end", s)
	}
}

// The usual short connection: the backend answers and closes, the client
// reads it all and closes. The back leg's FIN goes second to a backend
// that acknowledged the whole request: the close sends it, with no
// shutdown of its own (the front's, sent first, is one). Each stream is
// whole (SHA-256), the record says the backend's FIN came first, and the
// backend's kernel holds the TIME-WAIT the record names.
func TestBackLegSecondFINGoesWithTheClose(t *testing.T) {
	var front, back atomic.Int32
	shutdownHook = func(l policy.Leg) {
		if l == policy.Front {
			front.Add(1)
		} else {
			back.Add(1)
		}
	}
	defer func() { shutdownHook = nil }()
	r := relay(t, policyClose(policy.TargetProxy, policy.FallbackFIN), policyClose(policy.TargetPeer, policy.FallbackReset), 5*time.Second)

	passRequest(t, r, 200, 5, false)
	answer, sum := payload(3000, 6)
	recv(t, writeAsync(r.backend, answer, true), time.Second, "answer and FIN")
	_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if s := readAll(r.client); s.err != nil || s.sum != sum {
		t.Fatalf("client read %d bytes (%v); want the answer by SHA-256, then EOF", s.n, s.err)
	}
	_ = r.client.Close()
	td := r.wait(t, 5*time.Second)
	if td.Outcome != OutcomeOK || td.Back.Close != policy.CloseFIN || td.Back.FirstFIN != policy.SideBackend || td.Back.TimeWait != policy.SideBackend {
		t.Errorf("record %s (%v), back close %s first_fin %s time_wait %s; want ok, fin, backend, backend",
			td.Outcome, td.Err, td.Back.Close, td.Back.FirstFIN, td.Back.TimeWait)
	}
	waitState(t, loopback.AddrPort(r.backend.LocalAddr()), loopback.AddrPort(r.backend.RemoteAddr()), sockdiag.TimeWait)
	if f, b := front.Load(), back.Load(); f != 1 || b != 0 {
		t.Errorf("shutdowns: front %d, back %d; want 1 (the proxy's FIN first) and 0 (the close sends it)", f, b)
	}
}

// The same, but the backend resets after its FIN (it closes with SO_LINGER
// 0) before the client's FIN ends the exchange: the proxy's FIN, which
// would go second, has nowhere to go. The record says the backend reset
// the leg, no TIME-WAIT anywhere on it, not a FIN exchange that claims
// one on the backend; the answer reached the client whole.
func TestBackLegResetAfterItsFINIsNoFINExchange(t *testing.T) {
	r := relay(t, policyClose(policy.TargetProxy, policy.FallbackFIN), policyClose(policy.TargetPeer, policy.FallbackReset), 5*time.Second)

	recv(t, writeAsync(r.client, []byte("req"), false), time.Second, "request")
	_ = r.backend.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
		t.Fatalf("backend read the request: %v", err)
	}
	answer, sum := payload(3000, 8)
	recv(t, writeAsync(r.backend, answer, true), time.Second, "answer and FIN")
	_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if s := readAll(r.client); s.err != nil || s.sum != sum {
		t.Fatalf("client read %d bytes (%v); want the answer by SHA-256, then EOF", s.n, s.err)
	}
	back, backend := loopback.AddrPort(r.backend.RemoteAddr()), loopback.AddrPort(r.backend.LocalAddr())
	_ = r.backend.SetLinger(0)
	_ = r.backend.Close()
	waitGone(t, back, backend) // the proxy's end, closed by the RST
	_ = r.client.Close()
	td := r.wait(t, 5*time.Second)
	if b := td.Back; b.Close != policy.ClosePeerReset || b.TimeWait != policy.SideNone || b.FINOut >= 0 || td.Outcome != OutcomeBackendReset {
		t.Errorf("back close %s time_wait %s fin_out %v, outcome %s (%v); want peer_reset, none, no FIN sent, backend_reset",
			b.Close, b.TimeWait, b.FINOut, td.Outcome, td.Err)
	}
}

// waitState waits until the socket local ↔ peer is in state, polling the
// kernel (the only way to see it), for at most 5 s.
func waitState(t *testing.T, local, peer netip.AddrPort, state sockdiag.State) {
	t.Helper()
	waitSocket(t, local, peer, "reached "+state.String(), func(s sockdiag.Socket, ok bool) bool { return ok && s.State == state })
}

// waitGone waits until the kernel lists no socket local ↔ peer (a socket
// closed by a reset leaves the tables).
func waitGone(t *testing.T, local, peer netip.AddrPort) {
	t.Helper()
	waitSocket(t, local, peer, "closed", func(_ sockdiag.Socket, ok bool) bool { return !ok })
}

// waitSocket polls sock_diag for the socket local ↔ peer until done says
// so, for at most 5 s; then the test fails, saying what never came.
func waitSocket(t *testing.T, local, peer netip.AddrPort, what string, done func(sockdiag.Socket, bool) bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s, ok, err := sockdiag.Find(local, peer)
		if err != nil {
			t.Fatalf("sock_diag: %v", err)
		}
		if done(s, ok) {
			return
		}
	}
	t.Fatalf("%s ↔ %s never %s", local, peer, what)
}

// Clients that half-close right behind their request, so that the front
// leg's FIN is the proxy's second. One reads the answer at once: it has
// acknowledged every byte when the backend's FIN comes, and the close
// sends the proxy's FIN (no shutdown on the front). One pauses reading
// an answer larger than its buffer: bytes are unacknowledged when the
// proxy's FIN goes, so the leg shuts down and waits for the client's
// answer to it. Either way the answer arrives whole (SHA-256), the
// record says the client's FIN came first, and the client's kernel holds
// the TIME-WAIT the record names.
func TestSecondFINToAHalfClosingClient(t *testing.T) {
	for _, c := range []struct {
		name          string
		pause         bool
		size          int
		wantShutdowns int32
	}{{"reads at once", false, 3000, 0}, {"pauses reading", true, 1 << 20, 1}} {
		t.Run(c.name, func(t *testing.T) {
			var front atomic.Int32
			shutdownHook = func(l policy.Leg) {
				if l == policy.Front {
					front.Add(1)
				}
			}
			defer func() { shutdownHook = nil }()
			// On loopback the proxy's send queue holds a 1 MiB answer, the
			// paused client's receive window a fraction of it.
			r := relay(t, policyClose(policy.TargetProxy, policy.FallbackFIN), policyClose(policy.TargetPeer, policy.FallbackReset), 5*time.Second)
			client, proxy := loopback.AddrPort(r.client.LocalAddr()), loopback.AddrPort(r.client.RemoteAddr())

			recv(t, writeAsync(r.client, []byte("req"), true), time.Second, "request and FIN")
			if got, err := io.ReadAll(r.backend); err != nil || string(got) != "req" {
				t.Fatalf("backend read %q, %v; want req, then the FIN passed on", got, err)
			}
			answer, sum := payload(c.size, 9)
			_ = r.client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if c.pause {
				recv(t, writeAsync(r.backend, answer, true), 5*time.Second, "answer and FIN")
				waitState(t, proxy, client, sockdiag.LastAck) // the proxy's FIN is out, behind bytes the client has not read
			} else {
				recv(t, writeAsync(r.backend, answer, false), time.Second, "answer")
				if _, err := io.ReadFull(r.client, make([]byte, c.size)); err != nil {
					t.Fatalf("client read the answer: %v", err)
				}
				waitSocket(t, proxy, client, "acknowledged", func(s sockdiag.Socket, ok bool) bool { return ok && s.Unacked == 0 })
				answer = nil
				_ = r.backend.CloseWrite()
			}
			if s := readAll(r.client); s.err != nil || (answer != nil && s.sum != sum) {
				t.Fatalf("client read %d more bytes (%v); want the answer by SHA-256, then EOF", s.n, s.err)
			}
			td := r.wait(t, 5*time.Second)
			if f := td.Front; td.Outcome != OutcomeOK || f.Close != policy.CloseFIN || f.FirstFIN != policy.SideClient || f.TimeWait != policy.SideClient {
				t.Errorf("record %s (%v), front close %s first_fin %s time_wait %s; want ok, fin, client, client", td.Outcome, td.Err, f.Close, f.FirstFIN, f.TimeWait)
			}
			waitState(t, client, proxy, sockdiag.TimeWait)
			if n := front.Load(); n != c.wantShutdowns {
				t.Errorf("front shutdowns %d; want %d", n, c.wantShutdowns)
			}
		})
	}
}

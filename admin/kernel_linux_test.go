package admin

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
)

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// Polls /metrics until both legs show a TIME-WAIT: the sampler and the
// kernel's last ACK are the only things to wait for. The sampler spaces
// its samples by at least 100 times what one cost (twwatch's
// sampleShare): on a host holding tens of thousands of TIME-WAIT sockets
// of other loads that is seconds, hence the deadline.
func TestKernelTimeWaitByLeg(t *testing.T) {
	if _, err := sockdiag.List(sockdiag.TimeWait); err != nil {
		t.Skipf("sock_diag unavailable here: %v", err)
	}
	front, back := listenLoopback(t), listenLoopback(t)
	a := New(testConfig(front.Addr().String(), back.Addr().String()), zaptest.NewLogger(t))
	base := serve(t, a)
	mark := procnet.MarkTimeWaitOverflow()
	loopback.TimeWait(t, front, "", true) // the proxy's end of a front leg closed first
	loopback.TimeWait(t, back, "", false) // the proxy's end of a back leg closed first

	var got map[string]float64
	bare := func() int { // legs that show no TIME-WAIT yet
		n := 0
		for _, leg := range []string{"front", "back"} {
			if got[`closeproxy_kernel_time_wait{leg="`+leg+`"}`] < 1 {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = scrape(t, base); bare() == 0 {
			break
		}
	}
	if d, ok := mark.Covers(bare()); ok {
		t.Skipf("no TIME-WAIT on %d legs after 20s: the kernel destroyed %d meanwhile (TCPTimeWaitOverflow), the host's table full", bare(), d)
	}
	for _, k := range []string{
		`closeproxy_kernel_time_wait{leg="front"}`, `closeproxy_kernel_time_wait{leg="back"}`,
		"closeproxy_kernel_time_wait_host", "closeproxy_kernel_tcp_max_tw_buckets",
	} {
		if got[k] < 1 {
			t.Errorf("%s = %v, want ≥ 1", k, got[k])
		}
	}
	if _, ok := got["closeproxy_kernel_tcp_timewait_overflow"]; !ok {
		t.Error("closeproxy_kernel_tcp_timewait_overflow missing")
	}
}

// The /readyz probe closes with an RST: no TIME-WAIT toward the backend on
// either side.
func TestReadyzProbeLeavesNoTimeWait(t *testing.T) {
	if _, err := sockdiag.List(sockdiag.TimeWait); err != nil {
		t.Skipf("sock_diag unavailable here: %v", err)
	}
	back := listenLoopback(t)
	a := New(testConfig("127.0.0.1:0", back.Addr().String()), zaptest.NewLogger(t))
	base := serve(t, a)
	srv := &fakeServer{}
	srv.serving.Store(true)
	a.Attach(srv)
	readyz(t, base, http.StatusOK, "ready")
	s, err := back.Accept() // the probe's connection, reset already
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Errorf("backend read %v after the probe, want a reset", err)
	}
	// The probe's connection by its whole 4-tuple, on either side: older
	// sockets of other tests on this host may share a port number.
	probe := netip.MustParseAddrPort(s.RemoteAddr().String())
	s.Close()
	backAP := netip.MustParseAddrPort(back.Addr().String())
	socks, err := sockdiag.List(sockdiag.TimeWait, sockdiag.FinWait2)
	if err != nil {
		t.Fatal(err)
	}
	if n := sockdiag.Count(socks, func(s sockdiag.Socket) bool {
		return s.Local == probe && s.Peer == backAP || s.Local == backAP && s.Peer == probe
	}); n != 0 {
		t.Errorf("%d TIME-WAIT or FIN-WAIT-2 sockets of the probe %s → %s, want 0", n, probe, backAP)
	}
}

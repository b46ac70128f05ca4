package twwatch

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
)

func listen4(t testing.TB) (net.Listener, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).AddrPort()
}

// Real sockets: TIME-WAIT on a listener's port counts on the front leg,
// TIME-WAIT toward a backend on the back leg and toward that backend; the
// other ends of those connections, and a client's TIME-WAIT toward the
// listener, count nowhere. Counted as a difference from a first sample:
// the host may hold older sockets on these ports.
func TestSampleCountsRealTimeWait(t *testing.T) {
	if _, err := sockdiag.ListMatching(&sockdiag.Filter{LocalPorts: []uint16{1}}, sockdiag.TimeWait); err != nil {
		t.Skipf("sock_diag unavailable here: %v", err)
	}
	front, frontAP := listen4(t)
	back1, b1 := listen4(t)
	back2, b2 := listen4(t)
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "web", Listen: frontAP.String()}},
		Backends:  []config.Backend{{Name: "app", Servers: []config.Server{{Address: b1.String()}, {Address: b2.String()}}}},
	}
	w := New(cfg, zaptest.NewLogger(t))
	base := w.Refresh()
	if base.Err != nil {
		t.Fatalf("first sample: %v", base.Err)
	}
	mark := procnet.MarkTimeWaitOverflow()
	for range 3 {
		loopback.TimeWait(t, front, "", true) // the proxy ended a front leg first
	}
	loopback.TimeWait(t, back1, "", false) // the proxy ended back legs first
	loopback.TimeWait(t, back1, "", false)
	loopback.TimeWait(t, back2, "", false)
	loopback.TimeWait(t, front, "", false) // a client's TIME-WAIT: not the proxy's
	loopback.TimeWait(t, back1, "", true)  // the backend's TIME-WAIT: not the proxy's

	want := map[string]int{"front": 3, "back": 3, b1.String(): 2, b2.String(): 1}
	var got map[string]int
	// A connection enters TIME-WAIT when its last ACK is handled, which a
	// loaded host may do after Close returns: poll, with a deadline.
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got = delta(base, w.Refresh(), b1, b2)
		if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
			break
		}
	}
	if d, ok := mark.Covers(shortOf(got, want)); ok {
		t.Skipf("new TIME-WAIT by leg and destination %v, want %v: the kernel destroyed %d meanwhile (TCPTimeWaitOverflow), the host's table full", got, want, d)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("new TIME-WAIT by leg and destination %v, want %v", got, want)
	}
}

// delta is what s counts more than base, by leg and destination.
func delta(base, s *Sample, dests ...netip.AddrPort) map[string]int {
	out := map[string]int{"front": s.Front.Value - base.Front.Value, "back": s.Back.Value - base.Back.Value}
	for _, d := range dests {
		n0, _ := base.Toward(d)
		n, _ := s.Toward(d)
		out[d.String()] = n - n0
	}
	return out
}

// shortOf is how many sockets got counts fewer than want on the two legs
// (the destinations' counts are the back leg's), or 0 when it counts more
// anywhere (then nothing destroyed explains it).
func shortOf(got, want map[string]int) int {
	short := 0
	for k, n := range got {
		if n > want[k] {
			return 0
		}
		if k == "front" || k == "back" {
			short += want[k] - n
		}
	}
	return short
}

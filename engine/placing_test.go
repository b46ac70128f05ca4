package engine

import (
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/policy"
)

// placings counts Session.Placing's calls per leg and their releases.
type placings struct {
	mu       sync.Mutex
	placed   map[policy.Leg]int
	released int
}

func (p *placings) placing(leg policy.Leg, _ netip.AddrPort) func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.placed[leg]++
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.released++
	}
}

// A leg using auto tells Session.Placing when it sends the first FIN (its
// TIME-WAIT is on its way to the proxy, the record will say so only once
// the peer's FIN came), and only then: a FIN that follows its peer's
// tells nothing. The count ends with the session. auto's host budget
// counts from that call, so that sessions still closing cannot take it
// past the budget.
func TestAutoTellsPlacingOfFirstFINs(t *testing.T) {
	auto := policyClose(policy.TargetAuto, policy.FallbackFIN)
	req, _ := payload(100, 7)
	resp, _ := payload(1000, 8)
	for _, c := range []struct {
		name        string
		clientFirst bool // the client half-closes with its request, the backend reads it to EOF
		front, back int  // Placing's calls per leg
	}{
		// The backend closes first; the proxy's FIN to the client goes first
		// (auto without pressure: TIME-WAIT on the proxy), its FIN to the
		// backend second.
		{"backend's FIN first", false, 1, 0},
		// The client's FIN is in when the answer ends: a safe reset spares
		// it, no FIN. The backend may await EOF: after the probe it gets the
		// proxy's FIN first (rule 1), and the proxy its TIME-WAIT.
		{"client's FIN first", true, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &placings{placed: map[policy.Leg]int{}}
			r := relay(t, auto, auto, 5*time.Second, func(s *Session) { s.Placing = p.placing })
			recv(t, writeAsync(r.client, req, c.clientFirst), time.Second, "client request")
			if _, err := io.ReadFull(r.backend, make([]byte, len(req))); err != nil {
				t.Fatal(err)
			}
			if c.clientFirst {
				if b := readAll(r.backend); b.n != 0 || b.err != nil {
					t.Fatalf("backend read %d more bytes, then %v; want EOF", b.n, b.err)
				}
			}
			clientGot := readAllAsync(r.client)
			recv(t, writeAsync(r.backend, resp, true), time.Second, "backend answer")
			if s := recv(t, clientGot, 2*time.Second, "client's answer"); s.n != int64(len(resp)) {
				t.Fatalf("client read %d of %d bytes, then %v", s.n, len(resp), s.err)
			}
			if !c.clientFirst {
				p.mu.Lock()
				placed := p.placed[policy.Front]
				p.mu.Unlock()
				if placed != 1 {
					t.Errorf("the proxy's FIN reached the client, Placing told %d times for the front leg; want 1 before the client closes", placed)
				}
				_ = r.client.CloseWrite()
			}
			td := r.wait(t, 5*time.Second)
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.placed[policy.Front] != c.front || p.placed[policy.Back] != c.back || p.released != c.front+c.back {
				t.Errorf("Placing told front %d, back %d, released %d; want front %d, back %d, released %d (time_wait front %s, back %s)",
					p.placed[policy.Front], p.placed[policy.Back], p.released, c.front, c.back, c.front+c.back, td.Front.TimeWait, td.Back.TimeWait)
			}
			// What was placed is what the record says the proxy may hold
			// (unknown: an order of FINs the kernel's readings could not
			// prove, which auto counts as the proxy's too).
			for _, l := range []struct {
				leg  policy.Leg
				want int
			}{{policy.Front, c.front}, {policy.Back, c.back}} {
				tw := td.Leg(l.leg).TimeWait
				if mayHold := tw == policy.SideProxy || tw == policy.SideBoth || tw == policy.SideUnknown; mayHold != (l.want == 1) {
					t.Errorf("%s.time_wait %s, Placing told %d", l.leg, tw, l.want)
				}
			}
		})
	}
}

// A client that aborts (an RST) once the proxy's first FIN reached it
// leaves no TIME-WAIT: the FIN was told to Placing, the count still ends
// with the session, and the record does not name the proxy.
func TestAutoPlacingEndsWhenTheClientAborts(t *testing.T) {
	auto := policyClose(policy.TargetAuto, policy.FallbackFIN)
	p := &placings{placed: map[policy.Leg]int{}}
	r := relay(t, auto, defBack, 5*time.Second, func(s *Session) { s.Placing = p.placing })
	recv(t, writeAsync(r.client, []byte("req"), false), time.Second, "client request")
	if _, err := io.ReadFull(r.backend, make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	clientGot := readAllAsync(r.client)
	recv(t, writeAsync(r.backend, []byte("answer"), true), time.Second, "backend answer")
	if s := recv(t, clientGot, 2*time.Second, "client's answer and the proxy's FIN"); s.n != 6 || s.err != nil {
		t.Fatalf("client read %d bytes, then %v; want the answer and EOF", s.n, s.err)
	}
	_ = r.client.SetLinger(0)
	_ = r.client.Close() // the abort: an RST instead of its FIN
	td := r.wait(t, 5*time.Second)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.placed[policy.Front] != 1 || p.released != 1 {
		t.Errorf("Placing told front %d, released %d; want 1 and 1", p.placed[policy.Front], p.released)
	}
	if tw := td.Front.TimeWait; tw == policy.SideProxy || tw == policy.SideBoth {
		t.Errorf("front.time_wait %s after the client's RST, want no TIME-WAIT on the proxy", tw)
	}
}

package balance

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func servers(weights ...float64) []Candidate {
	out := make([]Candidate, len(weights))
	for i, w := range weights {
		out[i] = Candidate{Key: fmt.Sprintf("10.0.0.%d:80", 11+i), Weight: w, Up: true}
	}
	return out
}

// TestRoundRobinShares: over sum(weights) picks each server gets exactly its
// weight, and a heavy server's picks are interleaved, not bunched.
func TestRoundRobinShares(t *testing.T) {
	tests := []struct {
		weights []float64
		want    string // one round of picks
	}{
		{[]float64{1, 1, 1}, "012"},
		{[]float64{5, 1, 1}, "0010200"}, // nginx's documented sequence a a b a c a a
		{[]float64{2, 1}, "010"},
	}
	for _, tt := range tests {
		b := New(RoundRobin)
		c := servers(tt.weights...)
		got := ""
		for range 3 * len(tt.want) {
			got += fmt.Sprint(b.Order(c, netip.Addr{})[0])
		}
		if want := tt.want + tt.want + tt.want; got != want {
			t.Errorf("weights %v: picks %s, want %s", tt.weights, got, want)
		}
	}
}

// TestRoundRobinSkipsDown: a down server is never picked while another is
// up, and comes last only when none is up.
func TestRoundRobinSkipsDown(t *testing.T) {
	b := New(RoundRobin)
	c := servers(1, 1, 1)
	c[1].Up = false
	for range 10 {
		o := b.Order(c, netip.Addr{})
		if len(o) != 2 || o[0] == 1 || o[1] == 1 {
			t.Fatalf("order %v includes down server 1", o)
		}
	}
	c[0].Up, c[2].Up = false, false
	if o := b.Order(c, netip.Addr{}); len(o) != 3 {
		t.Fatalf("none up: order %v, want every server", o)
	}
}

// TestLeastConn: the pick has the fewest sessions per weight; equal loads
// rotate.
func TestLeastConn(t *testing.T) {
	b := New(LeastConn)
	c := servers(1, 2, 1)
	c[0].Active, c[1].Active, c[2].Active = 4, 6, 5 // loads with the new session: 5, 3.5, 6
	if o := b.Order(c, netip.Addr{}); fmt.Sprint(o) != "[1 0 2]" {
		t.Fatalf("order %v, want [1 0 2]", o)
	}
	eased := servers(1, 0.1, 1)
	for range 10 {
		if o := b.Order(eased, netip.Addr{}); o[0] == 1 || o[1] == 1 {
			t.Fatalf("order %v: the server at a tenth of its weight came before idle full-weight ones", o)
		}
	}
	c = servers(1, 1, 1)
	seen := map[int]int{}
	for range 300 {
		seen[b.Order(c, netip.Addr{})[0]]++
	}
	for i := range 3 {
		if seen[i] != 100 {
			t.Fatalf("equal loads: picks %v, want 100 each", seen)
		}
	}
}

// TestHashClientSticksAndRemapsMinimally: each client keeps its server;
// removing one of N servers moves exactly its clients (about 1/N), adding
// one moves clients only to it; weights set the shares.
func TestHashClientSticksAndRemapsMinimally(t *testing.T) {
	b := New(HashClient)
	four := servers(1, 1, 1, 1)
	three := four[:3]
	const clients = 20000
	counts := make([]int, 4)
	moved := 0
	for i := range clients {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		on := four[b.Order(four, ip)[0]].Key
		if again := four[b.Order(four, ip)[0]].Key; again != on {
			t.Fatalf("client %s moved from %s to %s with no change", ip, on, again)
		}
		counts[b.Order(four, ip)[0]]++
		after := three[b.Order(three, ip)[0]].Key
		if after != on {
			moved++
			if on != four[3].Key {
				t.Fatalf("client %s moved from %s, which was not removed, to %s", ip, on, after)
			}
		}
	}
	if share := float64(moved) / clients; share > 0.25+0.02 {
		t.Errorf("removing 1 of 4 servers moved %.3f of clients, want ≤ 1/4", share)
	}
	for i, n := range counts {
		if n < clients/4*9/10 || n > clients/4*11/10 {
			t.Errorf("server %d has %d of %d clients, want within 10%% of a quarter", i, n, clients)
		}
	}
	weighted := servers(1, 3)
	heavy := 0
	for i := range clients {
		ip := netip.AddrFrom4([4]byte{172, byte(i >> 16), byte(i >> 8), byte(i)})
		if b.Order(weighted, ip)[0] == 1 {
			heavy++
		}
	}
	if share := float64(heavy) / clients; share < 0.72 || share > 0.78 {
		t.Errorf("weight 3 of 4 took %.3f of clients, want 0.75±0.03", share)
	}
}

// TestHealthStateMachine walks rise, fall, passive ejection and revive.
func TestHealthStateMachine(t *testing.T) {
	now := time.Unix(1000, 0)
	h := NewHealth(HealthConfig{Rise: 2, Fall: 3, EjectAfter: 2})
	steps := []struct {
		name    string
		do      func() bool
		changed bool
		up      bool
	}{
		{"one failed check", func() bool { return h.Checked(false, now) }, false, true},
		{"two failed checks", func() bool { return h.Checked(false, now) }, false, true},
		{"a pass resets the count", func() bool { return h.Checked(true, now) }, false, true},
		{"fail 1", func() bool { return h.Checked(false, now) }, false, true},
		{"fail 2", func() bool { return h.Checked(false, now) }, false, true},
		{"fail 3: down", func() bool { return h.Checked(false, now) }, true, false},
		{"pass 1", func() bool { return h.Checked(true, now) }, false, false},
		{"pass 2: up", func() bool { return h.Checked(true, now) }, true, true},
		{"passive failure 1", func() bool { return h.Passive(false, now) }, false, true},
		{"passive ok resets", func() bool { return h.Passive(true, now) }, false, true},
		{"passive failure 1 again", func() bool { return h.Passive(false, now) }, false, true},
		{"a passed check between leaves it counted", func() bool { return h.Checked(true, now) }, false, true},
		{"passive failure 2: ejected", func() bool { return h.Passive(false, now) }, true, false},
		{"passive ok does not bring it back", func() bool { return h.Passive(true, now) }, false, false},
	}
	for _, s := range steps {
		if got := s.do(); got != s.changed || h.Up(now) != s.up {
			t.Fatalf("%s: changed %v up %v, want %v %v", s.name, got, h.Up(now), s.changed, s.up)
		}
	}
	if e := h.State(now).Ejections; e.Check != 1 || e.Passive != 1 {
		t.Fatalf("ejections %+v, want 1 by check and 1 passive", e)
	}
	revived := 0
	r := NewHealth(HealthConfig{EjectAfter: 1, Revive: time.Second, Revived: func() { revived++ }})
	r.Passive(false, now)
	if r.Up(now.Add(999 * time.Millisecond)) {
		t.Fatal("revived before Revive")
	}
	if !r.Up(now.Add(time.Second)) || !r.Up(now.Add(2*time.Second)) {
		t.Fatal("not revived after Revive")
	}
	if revived != 1 { // the proxy logs it: an ejection's log line has its end
		t.Errorf("Revived called %d times, want once", revived)
	}
}

// TestEaseIn: a server that came back starts at a tenth of its weight and
// reaches it all after EaseIn; one up from the start is at full weight.
func TestEaseIn(t *testing.T) {
	now := time.Unix(1000, 0)
	h := NewHealth(HealthConfig{Rise: 1, Fall: 1, EaseIn: 10 * time.Second})
	if w := h.Weight(10, now); w != 10 {
		t.Fatalf("up from the start: weight %v, want 10", w)
	}
	h.Checked(false, now)
	h.Checked(true, now)
	for _, tt := range []struct {
		after time.Duration
		want  float64
	}{{0, 1}, {5 * time.Second, 5.5}, {10 * time.Second, 10}, {time.Minute, 10}} {
		if w := h.Weight(10, now.Add(tt.after)); w < tt.want-1e-9 || w > tt.want+1e-9 {
			t.Errorf("%s after coming back: weight %v, want %v", tt.after, w, tt.want)
		}
	}
}

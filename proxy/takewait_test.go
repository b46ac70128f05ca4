package proxy

import (
	"testing"
	"time"
)

// The wait for a backend to take the rest of a request goes on while its
// send queue shrinks, ends at once when it is empty, and runs out after
// takeQuiet without progress or at its bound in all, whichever is first.
func TestTakeWaitFollowsTheBackendTaking(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var w takeWait
	if w.start(t0, 0, time.Second) || w.start(t0, -1, time.Second) {
		t.Fatal("a wait started with nothing unacknowledged (or an unreadable queue)")
	}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type look struct {
		at                time.Duration
		q                 int
		taken, over, next bool
	}
	for _, c := range []struct {
		name  string
		most  time.Duration
		looks []look
	}{
		{"taken", time.Second, []look{{1 * time.Millisecond, 900, false, false, true}, {2 * time.Millisecond, 0, true, false, false}}},
		{"quiet", time.Second, []look{{10 * time.Millisecond, 1000, false, false, true}, {takeQuiet, 1000, false, true, false}}},
		{"progress holds it on", time.Second, []look{
			{40 * time.Millisecond, 900, false, false, true}, {80 * time.Millisecond, 800, false, false, true},
			{80*time.Millisecond + takeQuiet - time.Millisecond, 800, false, false, true},
			{80*time.Millisecond + takeQuiet, 800, false, true, false}}},
		{"bound", 60 * time.Millisecond, []look{{40 * time.Millisecond, 900, false, false, true}, {60 * time.Millisecond, 800, false, true, false}}},
		{"unreadable", time.Second, []look{{time.Millisecond, -1, false, true, false}}},
	} {
		if !w.start(t0, 1000, c.most) {
			t.Fatalf("%s: no wait with 1000 bytes unacknowledged", c.name)
		}
		for i, l := range c.looks {
			taken, over, next := w.look(at(l.at), l.q)
			if taken != l.taken || over != l.over || next.IsZero() == l.next || l.next && !next.After(at(l.at)) {
				t.Errorf("%s, look %d (%v, %d): taken %v over %v next %v, want %v %v and a next look %v",
					c.name, i, l.at, l.q, taken, over, next, l.taken, l.over, l.next)
			}
		}
	}
}

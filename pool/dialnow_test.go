package pool

import (
	"context"
	"testing"

	"golang.org/x/sys/unix"
)

// scriptedBare is a BareDialFunc whose connect is what next says: done
// inside the call (Home -1), watched by a loop (Home 0), or still under
// way, which a done context turns into the context's error. Its sockets
// are real but never connected: the pool's accounting is under test.
type scriptedBare struct {
	t        *testing.T
	next     string // inCall | watched | underWay
	calls    int
	doneCtxs int // calls whose context was done from the start
}

func (s *scriptedBare) dial(ctx context.Context, _ string) (*Bare, error) {
	s.calls++
	if ctx.Err() != nil {
		s.doneCtxs++
	}
	home := -1
	switch s.next {
	case "watched":
		home = 0
	case "underWay":
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		home = 0
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		s.t.Fatal(err)
	}
	return &Bare{FD: fd, Home: home}, nil
}

// DialNow to a loopback address dials from the first: such a backend is on
// this host; and stops once a dial needed a wait.
func TestDialNowLoopbackFromTheFirst(t *testing.T) {
	sb := &scriptedBare{t: t, next: "inCall"}
	p := newPool(t, Config{Address: "127.0.0.1:9", MaxConns: 3, DialBare: sb.dial}, nil)
	c := p.DialNow()
	if c == nil || sb.doneCtxs != 1 {
		t.Fatalf("DialNow to a loopback address before any dial: %v, %d dials with a done context; want a connection, 1", c, sb.doneCtxs)
	}
	drop(p, c)
	sb.next = "underWay"
	if c := p.DialNow(); c != nil {
		t.Fatalf("DialNow of a connect under way: %v, want nil", c)
	}
	calls := sb.calls
	if c := p.DialNow(); c != nil || sb.calls != calls {
		t.Errorf("DialNow after a connect that needed a wait: %v, %d dials more; want nil, none", c, sb.calls-calls)
	}
}

// DialNow dials only while the last bare dial was done inside connect,
// only into a slot free at once, and only with a context done from the
// start; what it cannot have at once costs no slot and no failure.
func TestDialNow(t *testing.T) {
	sb := &scriptedBare{t: t, next: "inCall"}
	// A documentation address: the scripted dial connects nothing.
	p := newPool(t, Config{Address: "192.0.2.1:9", MaxConns: 3, DialBare: sb.dial}, nil)

	if c := p.DialNow(); c != nil || sb.calls != 0 {
		t.Fatalf("DialNow before any dial: %v after %d dials, want nil and none (nothing known of the backend)", c, sb.calls)
	}
	first := get(t, p) // a dial done inside the call
	c := p.DialNow()
	if c == nil || sb.doneCtxs != 1 {
		t.Fatalf("DialNow after a dial done inside the call: %v, %d dials with a done context; want a connection, 1", c, sb.doneCtxs)
	}
	if s := p.Stats(); s.InUse != 2 || s.Dialed != 2 {
		t.Errorf("stats %+v, want InUse 2, Dialed 2", s)
	}

	sb.next = "underWay"
	if c := p.DialNow(); c != nil {
		t.Fatalf("DialNow of a connect under way: %v, want nil", c)
	}
	if s := p.Stats(); s.InUse != 2 || s.DialFailures != 0 || s.Failing != 0 {
		t.Errorf("after a connect that could not wait: %+v, want InUse 2 (the slot given back), no failure", s)
	}
	calls := sb.calls
	if c := p.DialNow(); c != nil || sb.calls != calls {
		t.Errorf("DialNow after a connect that needed a wait: %v, %d dials more; want nil, none", c, sb.calls-calls)
	}

	sb.next = "watched"
	drop(p, get(t, p)) // watched by a loop: still not done inside the call
	sb.next = "inCall"
	calls = sb.calls
	if c := p.DialNow(); c != nil || sb.calls != calls {
		t.Errorf("DialNow after a dial a loop watched: %v, %d dials more; want nil, none", c, sb.calls-calls)
	}
	third := get(t, p) // done inside the call again: 3 of 3 slots in use
	calls = sb.calls
	if c := p.DialNow(); c != nil || sb.calls != calls {
		t.Errorf("DialNow at max_conns: %v, %d dials more; want nil, none (it never waits for a slot)", c, sb.calls-calls)
	}
	for _, c := range []*Conn{first, c, third} {
		drop(p, c)
	}
	if s := p.Stats(); s.InUse != 0 {
		t.Errorf("after every connection dropped: %+v, want InUse 0", s)
	}
}

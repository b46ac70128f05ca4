package pool

import (
	"context"
	"testing"
	"time"
)

// The sweeper peeks at idle connections outside the lock while Gets hand
// them out: a connection taken meanwhile and handed on (Detach, as the
// relay loops take a socket) is changed by its holder, and the sweeper
// reads only what it saw under the lock (a data race under -race
// before), and nothing it finds on a taken connection says the backend
// sends first.
func TestSweepWhileConnectionsAreHandedOn(t *testing.T) {
	b := newBackend(t, true)
	p := newPool(t, Config{Address: b.addr, Warm: 16, MaxIdleAge: 400 * time.Millisecond}, nil)
	run(t, p)
	waitFor(t, "warm connections", func() bool { return p.Stats().Idle >= 8 })
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := p.Get(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		tc := c.TCPConn
		c.Detach()
		_ = tc.SetLinger(0)
		_ = tc.Close()
		p.Release(c)
		time.Sleep(time.Millisecond) // a session's pace: sweeps (every 100 ms) fall among the takes
	}
	if p.speaksFirst.Load() {
		t.Error("warming stopped: a sweep took a connection handed out meanwhile for one with a greeting")
	}
}

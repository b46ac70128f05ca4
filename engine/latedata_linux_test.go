package engine

import (
	"bufio"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A leg ended with its peer's late bytes in hand is reset once the peer
// acknowledged what it was sent. A peer that reads gets everything and
// the record says nothing was cut; one that paused reading (its window
// full, the proxy's queue stuck) is reset at drain_timeout and the record
// says cut. Either way the peer learns by the reset that its bytes were
// lost.
func TestLateDataResetWaitsForTheAcks(t *testing.T) {
	const drain = 300 * time.Millisecond
	for _, reading := range []bool{true, false} {
		client, server := loopback.Pair(t, loopback.Listener(t))
		// What the proxy sent before the end: with the client paused,
		// more than its window and the proxy's buffer take.
		sent := make(chan int64, 1)
		go func() {
			_ = server.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			n, _ := server.Write(make([]byte, 32<<20))
			sent <- int64(n)
		}()
		type read struct {
			n   int64
			err error
		}
		got := make(chan read, 1)
		if reading {
			go func() { n, err := io.Copy(io.Discard, client); got <- read{n, err} }()
		}
		n := <-sent
		if _, err := client.Write([]byte("late")); err != nil {
			t.Fatal(err)
		}
		in := bufio.NewReader(server)
		if _, err := in.Peek(4); err != nil { // the late bytes, in hand
			t.Fatal(err)
		}
		_ = server.SetDeadline(time.Time{})
		pol := defFront
		pol.DrainTimeout = drain
		s := &Session{Rec: NewRecorder(1, "web", "app", pol.TimeWait, defBack.TimeWait), Front: pol, Back: defBack}
		start := time.Now()
		s.End(policy.Front, server, in, Ending{})
		took := time.Since(start)
		f := s.Rec.Record().Front
		if f.Close != policy.CloseReset || f.Reason != policy.ReasonLateData || f.Cut == reading {
			t.Errorf("reading %v: front close %s reason %s cut %v; want reset for late_data, cut %v", reading, f.Close, f.Reason, f.Cut, !reading)
		}
		if !reading {
			if took < drain {
				t.Errorf("a paused client was reset after %v, before drain_timeout %v", took, drain)
			}
			_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
			go func() { n, err := io.Copy(io.Discard, client); got <- read{n, err} }()
		}
		r := <-got
		if reading && r.n != n || !errors.Is(r.err, syscall.ECONNRESET) {
			t.Errorf("reading %v: the client read %d of %d bytes, then %v; want every byte if it read, then a reset", reading, r.n, n, r.err)
		}
		client.Close()
	}
}

package engine

import (
	"runtime"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
)

// A long-lived session that carried a bulk stream and then went quiet
// gives back its splice pipe at the idle timer's looks, long before
// idle_timeout ends it: it holds its two sockets, not six descriptors.
// Its next bulk stream splices through a new pipe, byte for byte.
func TestLoopRelayIdleSessionGivesBackItsPipe(t *testing.T) {
	if !onLoops {
		t.Skip("a goroutine copier keeps its pipe until its direction ends; set CLOSEPROXY_TEST_RELAY=loop")
	}
	runtime.GC() // Go's own splice pipes from earlier tests (TestRelayCopyChunksThenSplices)
	runtime.GC()
	base := loopback.PipeFDs(t)
	const idle = 4 * time.Second // looks every second: the pipe goes within two
	r := relay(t, policyClose(policy.TargetProxy, policy.FallbackFIN), policyClose(policy.TargetPeer, policy.FallbackFIN), idle)
	passRequest(t, r, 2<<20, 1, false)
	if n := loopback.PipeFDs(t); n != base+2 {
		t.Fatalf("after a bulk stream the relay holds %d pipe descriptors, want 2 (one pipe)", n-base)
	}
	quiet := time.Now()
	for loopback.PipeFDs(t) > base {
		if time.Since(quiet) > idle-500*time.Millisecond {
			t.Fatalf("the quiet session still holds its pipe after %v", time.Since(quiet))
		}
		time.Sleep(20 * time.Millisecond) // polls the descriptor table: no event says a pipe closed
	}
	select {
	case <-r.done:
		t.Fatalf("the session ended while quiet: %+v", r.rec.Done())
	default:
	}
	passRequest(t, r, 2<<20, 2, true)
	if err := r.backend.Close(); err != nil {
		t.Fatal(err)
	}
	td := r.wait(t, 5*time.Second)
	if td.Outcome != OutcomeOK || td.Front.BytesIn != 4<<20 {
		t.Errorf("record: outcome %s (%v), front bytes_in %d, want ok and %d", td.Outcome, td.Err, td.Front.BytesIn, 4<<20)
	}
	if n := loopback.PipeFDs(t); n > base {
		t.Errorf("%d pipe descriptors left after the session ended", n-base)
	}
}

package engine

import "testing"

// TestFinOrder reads the FIN order from readings as the kernel gives them,
// the ACK of earlier data arriving after the proxy's FIN included.
func TestFinOrder(t *testing.T) {
	est := func(in uint32) tcpCounts { return tcpCounts{ok: true, state: stateEstablished, segsIn: in} }
	at := func(state uint8, in uint32) tcpCounts { return tcpCounts{ok: true, state: state, segsIn: in} }
	cases := []struct {
		name string
		o    finObs
		want order
	}{
		{"peer's FIN in before ours", finObs{taken: true, base: est(5), pre: stateCloseWait}, orderPeer},
		{"acknowledged at once", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait2}, orderProxy},
		{"FIN+ACK, one segment", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			eof: at(stateTimeWait, 6)}, orderProxy},
		{"crossed, caught in CLOSING", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			eof: at(stateClosing, 6)}, orderCrossed},
		{"data ACK, then FIN+ACK, FIN-WAIT-1 seen between", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			lastFW1: 7, eof: at(stateTimeWait, 7)}, orderProxy},
		{"data ACK, then two segments after the last look", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			lastFW1: 7, eof: at(stateTimeWait, 8)}, orderUnknown},
		{"two segments, no look between", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			eof: at(stateTimeWait, 7)}, orderUnknown},
		{"FIN-WAIT-2 seen", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			sawFW2: true, eof: at(stateTimeWait, 9)}, orderProxy},
		{"no readings", finObs{}, orderUnknown},
	}
	for _, c := range cases {
		if got := finOrder(c.o); got != c.want {
			t.Errorf("%s: finOrder = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestFinOrderSkippedReadings checks the readings the engine leaves out:
// with the leg not in FIN-WAIT-1 right after the proxy's FIN, finOrder
// never uses the counters then (afterFIN reads once), and where
// eofDecides is false it never uses those at the peer's FIN (atPeerFIN
// reads none). Every pair of states, against counters that change the
// verdict where they are used.
func TestFinOrderSkippedReadings(t *testing.T) {
	states := []uint8{stateEstablished, stateFinWait1, stateFinWait2, stateTimeWait, stateClose,
		stateCloseWait, stateLastAck, stateClosing}
	base := tcpCounts{ok: true, state: stateEstablished, segsIn: 5, segsOut: 5, dataSegsIn: 1, dataSegsOut: 1}
	counts := []tcpCounts{
		{},
		base,
		{ok: true, state: stateTimeWait, segsIn: 6, segsOut: 6, dataSegsIn: 1, dataSegsOut: 1},
		{ok: true, state: stateClosing, segsIn: 6, segsOut: 5, dataSegsIn: 1, dataSegsOut: 1},
		{ok: true, state: stateTimeWait, segsIn: 9, segsOut: 6, dataSegsIn: 1, dataSegsOut: 1},
	}
	// verdicts returns finOrder of o with each of counts put in by set.
	verdicts := func(o finObs, set func(*finObs, tcpCounts)) map[order]bool {
		seen := map[order]bool{}
		for _, c := range counts {
			v := o
			set(&v, c)
			seen[finOrder(v)] = true
		}
		return seen
	}
	usesPost, usesEOF := 0, 0
	for _, pre := range states {
		for _, after := range states {
			for _, fixed := range counts {
				o := finObs{taken: true, base: base, pre: pre, post: fixed, after: after, eof: fixed}
				if v := verdicts(o, func(o *finObs, c tcpCounts) { o.post = c }); len(v) > 1 {
					usesPost++
					if !finWait1(after) {
						t.Errorf("pre %d, after %d: the verdict depends on the counters right after the FIN, which afterFIN reads only in FIN-WAIT-1 (%v)", pre, after, v)
					}
				}
				if v := verdicts(o, func(o *finObs, c tcpCounts) { o.eof = c }); len(v) > 1 {
					usesEOF++
					if !o.eofDecides() {
						t.Errorf("pre %d, after %d: the verdict depends on the counters at the peer's FIN, which eofDecides says need no reading (%v)", pre, after, v)
					}
				}
			}
		}
	}
	if usesPost == 0 || usesEOF == 0 {
		t.Fatalf("no verdict moved with the counters (right after the FIN: %d, at the peer's: %d): the test proves nothing", usesPost, usesEOF)
	}
}

// The readings right after the proxy's FIN serve as the one at the peer's
// FIN when either found the leg closed (its counters are final), and only
// then: atPeerFIN reads again for every other state.
func TestNoteAfterKeepsAClosedReading(t *testing.T) {
	fw1 := tcpCounts{ok: true, state: stateFinWait1, segsIn: 5, segsOut: 6}
	closed := tcpCounts{ok: true, state: stateClose, segsIn: 7, segsOut: 6}
	fw2 := tcpCounts{ok: true, state: stateFinWait2, segsIn: 6, segsOut: 6}
	for _, c := range []struct {
		name    string
		p, s    tcpCounts
		after   uint8
		eof     tcpCounts // kept for the peer's FIN; zero: none, atPeerFIN reads
		readsAt bool      // atPeerFIN reads at the peer's FIN (pre ESTABLISHED)
	}{
		{"closed inside the shutdown call", closed, tcpCounts{}, stateClose, closed, false},
		{"FIN-WAIT-1, then closed", fw1, closed, stateClose, closed, false},
		{"FIN-WAIT-1, then FIN-WAIT-2", fw1, fw2, stateFinWait2, tcpCounts{}, false},
		{"FIN-WAIT-1 twice", fw1, fw1, stateFinWait1, tcpCounts{}, true},
		{"FIN-WAIT-1, then no reading", fw1, tcpCounts{}, 0, tcpCounts{}, false},
		{"FIN-WAIT-2 at once", fw2, tcpCounts{}, stateFinWait2, tcpCounts{}, false},
	} {
		o := finObs{taken: true, pre: stateEstablished}
		o.noteAfter(c.p, c.s)
		if o.after != c.after || o.eof != c.eof || o.post != c.p {
			t.Errorf("%s: after %d, eof %+v, post %+v; want %d, %+v, %+v", c.name, o.after, o.eof, o.post, c.after, c.eof, c.p)
		}
		if reads := o.eofDecides() && !o.eof.ok; reads != c.readsAt {
			t.Errorf("%s: atPeerFIN reads %v, want %v", c.name, reads, c.readsAt)
		}
	}
}

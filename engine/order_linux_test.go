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

package policy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// decideRow is one situation on a leg and what Decide must answer. The
// same rows hold on both legs; the test runs each on the front and on the
// back leg.
type decideRow struct {
	name  string // the situation; {peer} stands for the peer's name on the leg
	facts Facts  // Leg is filled in per leg
	want  Action
	// lands is where TIME-WAIT ends up once the action is carried out and
	// the leg closes in order: "proxy", "peer" or "none"; empty while the
	// action leaves the leg open (Withhold) or just closes it (Finish).
	lands  string
	reason Reason
}

var (
	grace1s = Grace{Max: time.Second}
	base    = Facts{Fallback: FallbackFIN, Grace: grace1s, HalfClose: 30 * time.Second, DrainTimeout: time.Second, OtherSideDone: true}
)

func with(f Facts, edit func(*Facts)) Facts { edit(&f); return f }

var decideTable = []decideRow{
	// target proxy: "FIN now; read until the peer's FIN → TIME-WAIT on proxy".
	{"target proxy, proxy ends first", with(base, func(f *Facts) { f.Target, f.Event = TargetProxy, SendDone }), FIN, "proxy", ""},
	{"target proxy, proxy ends first, {peer} may await EOF", with(base, func(f *Facts) { f.Target, f.Event, f.PeerMayAwaitEOF = TargetProxy, SendDone, true }), FIN, "proxy", ""},
	// "FIN second → TIME-WAIT on peer (unavoidable; recorded as wanted≠got)".
	{"target proxy, {peer} ends first", with(base, func(f *Facts) { f.Target, f.Event, f.PeerFINIn = TargetProxy, SendDone, true }), FIN, "peer", ReasonPeerFirst},
	{"target proxy, FIN sent, {peer}'s FIN arrives", with(base, func(f *Facts) { f.Target, f.Event, f.FINSent = TargetProxy, PeerFIN, true }), Finish, "", ""},

	// target peer, proxy-first: "withhold FIN; wait for the peer's FIN …".
	{"target {peer}, proxy ends first", with(base, func(f *Facts) { f.Target, f.Event = TargetPeer, SendDone }), Withhold, "", ""},
	// Rule 1: a peer that may wait for EOF is withheld from only briefly (a
	// probe); still silent then, it gets the FIN; having spoken, it was not
	// waiting and the full grace applies.
	{"target {peer}, proxy ends first, {peer} may await EOF", with(base, func(f *Facts) { f.Target, f.Event, f.PeerMayAwaitEOF = TargetPeer, SendDone, true }), Withhold, "", ""},
	{"target {peer}, probe runs out, {peer} still silent", with(base, func(f *Facts) { f.Target, f.Event, f.PeerMayAwaitEOF = TargetPeer, ProbeExpired, true }), FIN, "proxy", ReasonAwaitsEOF},
	{"target {peer}, probe runs out, {peer} spoke meanwhile", with(base, func(f *Facts) { f.Target, f.Event = TargetPeer, ProbeExpired }), Withhold, "", ""},
	// "FIN second → TIME-WAIT on peer".
	{"target {peer}, {peer} ends first", with(base, func(f *Facts) { f.Target, f.Event, f.PeerFINIn = TargetPeer, SendDone, true }), FIN, "peer", ""},
	{"target {peer}, {peer}'s FIN arrives within the grace", with(base, func(f *Facts) { f.Target, f.Event = TargetPeer, PeerFIN }), FIN, "peer", ""},
	// "Grace out → fallback".
	{"target {peer}, grace expires, fallback fin", with(base, func(f *Facts) { f.Target, f.Event = TargetPeer, GraceExpired }), FIN, "proxy", ReasonGraceExpired},
	{"target {peer}, grace expires, fallback reset", with(base, func(f *Facts) { f.Target, f.Event, f.Fallback = TargetPeer, GraceExpired, FallbackReset }), SafeReset, "none", ReasonGraceExpired},
	// A grace whose end finds the peer's FIN in the kernel (not read yet):
	// the peer ended it, "FIN second → TIME-WAIT on peer", not the fallback.
	{"target {peer}, grace expires with {peer}'s FIN in, fallback reset", with(base, func(f *Facts) {
		f.Target, f.Event, f.Fallback, f.PeerFINIn = TargetPeer, GraceExpired, FallbackReset, true
	}), FIN, "peer", ""},
	{"target {peer}, probe runs out with {peer}'s FIN in", with(base, func(f *Facts) {
		f.Target, f.Event, f.PeerFINIn, f.PeerMayAwaitEOF = TargetPeer, ProbeExpired, true, true
	}), FIN, "peer", ""},
	{"target {peer}, shutdown ends the grace, fallback reset", with(base, func(f *Facts) { f.Target, f.Event, f.Fallback = TargetPeer, Drain, FallbackReset }), SafeReset, "none", ReasonDraining},
	{"target {peer}, shutdown ends the grace, fallback fin", with(base, func(f *Facts) { f.Target, f.Event = TargetPeer, Drain }), FIN, "proxy", ReasonDraining},
	// Rule 1 again at the end of the grace: never a reset for a peer that may wait.
	{"target {peer}, grace expires, fallback reset, {peer} may await EOF", with(base, func(f *Facts) {
		f.Target, f.Event, f.Fallback, f.PeerMayAwaitEOF = TargetPeer, GraceExpired, FallbackReset, true
	}), FIN, "proxy", ReasonAwaitsEOF},

	// target nowhere: "as peer, but end with a safe reset".
	{"target nowhere, proxy ends first", with(base, func(f *Facts) { f.Target, f.Event = TargetNowhere, SendDone }), Withhold, "", ""},
	{"target nowhere, proxy ends first, {peer} may await EOF", with(base, func(f *Facts) { f.Target, f.Event, f.PeerMayAwaitEOF = TargetNowhere, SendDone, true }), Withhold, "", ""},
	{"target nowhere, probe runs out, {peer} still silent", with(base, func(f *Facts) { f.Target, f.Event, f.PeerMayAwaitEOF = TargetNowhere, ProbeExpired, true }), FIN, "proxy", ReasonAwaitsEOF},
	{"target nowhere, {peer} ends first", with(base, func(f *Facts) { f.Target, f.Event, f.PeerFINIn = TargetNowhere, SendDone, true }), SafeReset, "none", ""},
	{"target nowhere, {peer} ends first and reads to EOF", with(base, func(f *Facts) {
		f.Target, f.Event, f.PeerFINIn, f.PeerMayAwaitEOF = TargetNowhere, SendDone, true, true
	}), FIN, "peer", ReasonAwaitsEOF},
	{"target nowhere, {peer}'s FIN arrives within the grace", with(base, func(f *Facts) { f.Target, f.Event = TargetNowhere, PeerFIN }), SafeReset, "none", ""},
	{"target nowhere, grace expires, fallback fin", with(base, func(f *Facts) { f.Target, f.Event = TargetNowhere, GraceExpired }), SafeReset, "none", ReasonGraceExpired},
	// Rule 3: a grace ends a peer's stream by a reset only if the other
	// side is done with it; else the peer may have only paused.
	{"target {peer}, grace expires, fallback reset, other side still reading", with(base, func(f *Facts) {
		f.Target, f.Event, f.Fallback, f.OtherSideDone = TargetPeer, GraceExpired, FallbackReset, false
	}), FIN, "proxy", ReasonOtherReading},
	{"target nowhere, grace expires, other side still reading", with(base, func(f *Facts) {
		f.Target, f.Event, f.OtherSideDone = TargetNowhere, GraceExpired, false
	}), FIN, "proxy", ReasonOtherReading},
	{"target {peer}, shutdown ends the grace, other side still reading", with(base, func(f *Facts) {
		f.Target, f.Event, f.Fallback, f.OtherSideDone = TargetPeer, Drain, FallbackReset, false
	}), FIN, "proxy", ReasonOtherReading},

	// Rules 3 and 4, whatever the target.
	{"target {peer}, safe reset due, send queue stuck", with(base, func(f *Facts) { f.Target, f.Event = TargetPeer, QueueStuck }), FIN, "", ReasonQueueStuck},
	{"target nowhere, stream cut short", with(base, func(f *Facts) { f.Target, f.Event = TargetNowhere, Cut }), Reset, "none", ReasonCut},
	{"target proxy, stream cut short", with(base, func(f *Facts) { f.Target, f.Event = TargetProxy, Cut }), Reset, "none", ReasonCut},
	{"target {peer}, late data", with(base, func(f *Facts) { f.Target, f.Event = TargetPeer, LateData }), Reset, "none", ReasonLateData},
	{"target proxy, {peer} silent after the proxy's FIN", with(base, func(f *Facts) { f.Target, f.Event, f.FINSent = TargetProxy, HalfCloseExpired, true }), Reset, "none", ReasonHalfClose},
}

func (r decideRow) title(l Leg) string {
	return fmt.Sprintf("%s leg, %s", l, strings.ReplaceAll(r.name, "{peer}", string(l.Peer())))
}

func TestDecide(t *testing.T) {
	for _, l := range []Leg{Front, Back} {
		for _, r := range decideTable {
			t.Run(r.title(l), func(t *testing.T) {
				f := r.facts
				f.Leg = l
				d := Decide(f)
				if d.Action != r.want || d.Reason != r.reason {
					t.Fatalf("Decide(%+v) = %s (%q), want %s (%q)", f, d.Action, d.Reason, r.want, r.reason)
				}
				if r.lands != "" {
					want := map[string]Side{"proxy": SideProxy, "peer": l.Peer(), "none": SideNone}[r.lands]
					if got := Lands(l, d.Action, f.PeerFINIn || f.Event == PeerFIN); got != want {
						t.Errorf("after %s TIME-WAIT lands on %s, want %s", d.Action, got, want)
					}
				}
			})
		}
	}
}

// TestDecideWaits checks the wait budget each action comes with.
func TestDecideWaits(t *testing.T) {
	f := with(base, func(f *Facts) { f.Leg, f.Target, f.Event = Back, TargetPeer, SendDone })
	if d := Decide(f); d.Wait != time.Second {
		t.Errorf("withhold waits %v, want peer_fin_grace 1s", d.Wait)
	}
	f.Target = TargetProxy
	if d := Decide(f); d.Wait != 30*time.Second {
		t.Errorf("FIN first waits %v, want half_close_timeout 30s", d.Wait)
	}
	f.Target, f.PeerFINIn = TargetNowhere, true
	if d := Decide(f); d.Wait != time.Second {
		t.Errorf("safe reset waits %v, want drain_timeout 1s", d.Wait)
	}
	// A reset for late data waits for what the peer was sent to be
	// acknowledged; one for a cut stream or a timeout does not.
	for ev, want := range map[Event]time.Duration{LateData: time.Second, Cut: 0, HalfCloseExpired: 0} {
		f.Event = ev
		if d := Decide(f); d.Action != Reset || d.Wait != want {
			t.Errorf("%s: %s waiting %v, want reset waiting %v", ev, d.Action, d.Wait, want)
		}
	}
}

// TestDecideNeverWithholdsFromAWaitingPeer checks rule 1 over every target,
// event and fallback: a peer that may wait for EOF is withheld from only
// for a probe as long as the grace's floor, then gets the FIN, and is never
// reset unless a stream was cut.
func TestDecideNeverWithholdsFromAWaitingPeer(t *testing.T) {
	g := Grace{Max: time.Second, Adaptive: false, RTT: time.Millisecond}
	for _, l := range []Leg{Front, Back} {
		for _, tg := range []Target{TargetProxy, TargetPeer, TargetNowhere, TargetAuto} {
			for _, fb := range []Fallback{FallbackFIN, FallbackReset} {
				f := Facts{Leg: l, Target: tg, Fallback: fb, Event: SendDone, PeerMayAwaitEOF: true, Grace: g}
				switch d := Decide(f); {
				case d.Action == Withhold && (!d.Probe || d.Wait != MinGrace):
					t.Errorf("%s leg, target %s: withholds %v (probe %v), want a probe of %v", l, tg, d.Wait, d.Probe, MinGrace)
				case d.Action != Withhold && d.Action != FIN:
					t.Errorf("%s leg, target %s: %s, want a probe or the FIN", l, tg, d.Action)
				}
				for _, ev := range []Event{ProbeExpired, GraceExpired, Drain} {
					f.Event = ev
					if d := Decide(f); d.Action != FIN {
						t.Errorf("%s leg, target %s, %s, fallback %s: %s, want fin", l, tg, ev, fb, d.Action)
					}
				}
			}
		}
	}
}

// TestDecideNeverWithholdsOnceThePeersFINIsIn: a leg whose peer's FIN is
// in (before its own decision, or read while its FIN was withheld) is
// never withheld, so no grace or drain of a withheld FIN comes after it.
// The engine relies on it: it skips the readings only such a decision
// would ask for (engine's doneStillAsked).
func TestDecideNeverWithholdsOnceThePeersFINIsIn(t *testing.T) {
	for _, l := range []Leg{Front, Back} {
		for _, tg := range []Target{TargetProxy, TargetPeer, TargetNowhere, TargetAuto} {
			for _, fb := range []Fallback{FallbackFIN, FallbackReset} {
				for _, awaits := range []bool{false, true} {
					for _, ev := range []Event{SendDone, PeerFIN, GraceExpired, ProbeExpired, Drain} {
						f := Facts{Leg: l, Target: tg, Fallback: fb, Event: ev, PeerFINIn: true, PeerMayAwaitEOF: awaits, Grace: grace1s}
						if d := Decide(f); d.Action == Withhold {
							t.Errorf("%s leg, target %s, fallback %s, %s with the peer's FIN in: withholds", l, tg, fb, ev)
						}
					}
				}
			}
		}
	}
}

// TestDecideIsTotal checks that every combination of facts gets a known
// action, and that the auto target is always resolved.
func TestDecideIsTotal(t *testing.T) {
	known := map[Action]bool{FIN: true, Withhold: true, SafeReset: true, Reset: true, Finish: true}
	for _, l := range []Leg{Front, Back} {
		for _, tg := range []Target{TargetProxy, TargetPeer, TargetNowhere, TargetAuto} {
			for _, ev := range []Event{SendDone, PeerFIN, GraceExpired, ProbeExpired, HalfCloseExpired, QueueStuck, LateData, Cut, Drain} {
				for _, in := range []bool{false, true} {
					f := Facts{Leg: l, Target: tg, Fallback: FallbackReset, Event: ev, PeerFINIn: in, Grace: grace1s}
					d := Decide(f)
					if !known[d.Action] {
						t.Errorf("%+v: action %q", f, d.Action)
					}
					if d.Target == TargetAuto {
						t.Errorf("%+v: auto left unresolved", f)
					}
				}
			}
		}
	}
}

func TestGraceFloor(t *testing.T) {
	for _, tt := range []struct {
		name string
		g    Grace
		want time.Duration
	}{
		{"a near peer: MinGrace", Grace{Max: time.Second, RTT: time.Millisecond}, MinGrace},
		{"a far peer: four round trips", Grace{Max: time.Second, RTT: 100 * time.Millisecond}, 400 * time.Millisecond},
		{"never past peer_fin_grace", Grace{Max: 10 * time.Millisecond, RTT: time.Second}, 10 * time.Millisecond},
	} {
		if got := tt.g.Floor(); got != tt.want {
			t.Errorf("%s: Floor() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestGraceSilence(t *testing.T) {
	tests := []struct {
		name string
		g    Grace
		want time.Duration
	}{
		{"fixed: peer_fin_grace whatever the pauses", Grace{Max: time.Second, MaxPause: time.Millisecond}, time.Second},
		{"adaptive, a quick peer: the floor", Grace{Max: time.Second, Adaptive: true, MaxPause: time.Millisecond, RTT: 100 * time.Microsecond}, MinSilence},
		{"adaptive, pauses of 100ms: four times that", Grace{Max: time.Second, Adaptive: true, MaxPause: 100 * time.Millisecond}, 400 * time.Millisecond},
		{"adaptive, a far peer: four round trips", Grace{Max: time.Second, Adaptive: true, RTT: 50 * time.Millisecond}, 200 * time.Millisecond},
		{"adaptive, long pauses: capped at peer_fin_grace", Grace{Max: time.Second, Adaptive: true, MaxPause: 2 * time.Second}, time.Second},
		{"adaptive, grace below the floor: the grace", Grace{Max: 5 * time.Millisecond, Adaptive: true}, 5 * time.Millisecond},
		{"adaptive, a pause of 5ms: four times that", Grace{Max: time.Second, Adaptive: true, MaxPause: 5 * time.Millisecond}, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.g.Silence(); got != tt.want {
				t.Fatalf("%+v.Silence() = %v, want %v", tt.g, got, tt.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		name    string
		leg     Leg
		word    string
		want    Target
		wantErr string // a phrase the error must contain; "" means no error
	}{
		{"front leg, proxy keeps TIME-WAIT", Front, "proxy", TargetProxy, ""},
		{"front leg, client keeps TIME-WAIT", Front, "client", TargetPeer, ""},
		{"front leg, no TIME-WAIT anywhere", Front, "nowhere", TargetNowhere, ""},
		{"back leg, proxy keeps TIME-WAIT", Back, "proxy", TargetProxy, ""},
		{"back leg, backend keeps TIME-WAIT", Back, "backend", TargetPeer, ""},
		{"back leg, no TIME-WAIT anywhere", Back, "nowhere", TargetNowhere, ""},

		{"front leg, auto decides per close", Front, "auto", TargetAuto, ""},
		{"back leg, auto decides per close", Back, "auto", TargetAuto, ""},

		{"front leg spelled with the back leg's peer", Front, "backend", "", `"backend" is not one of proxy, client, nowhere, auto`},
		{"back leg spelled with the front leg's peer", Back, "client", "", `"client" is not one of proxy, backend, nowhere, auto`},
		{"front leg, internal name of the peer target", Front, "peer", "", "is not one of"},
		{"back leg, internal name of the peer target", Back, "peer", "", "is not one of"},
		{"front leg, empty", Front, "", "", `"" is not one of`},
		{"back leg, capitalised", Back, "Proxy", "", "is not one of"},
		{"front leg, padded with a space", Front, " nowhere", "", "is not one of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTarget(tt.leg, tt.word)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("ParseTarget(%s, %q) = %q, %v; want %q, nil", tt.leg, tt.word, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseTarget(%s, %q) = %q, nil; want an error containing %q", tt.leg, tt.word, got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseTarget(%s, %q) error = %q; want it to contain %q", tt.leg, tt.word, err, tt.wantErr)
			}
			if got != "" {
				t.Errorf("ParseTarget(%s, %q) returned target %q with an error", tt.leg, tt.word, got)
			}
		})
	}
}

// TestParseTargetNamesChoices checks that a refusal tells the user what
// they can write on that leg.
func TestParseTargetNamesChoices(t *testing.T) {
	for _, l := range []Leg{Front, Back} {
		_, err := ParseTarget(l, "sometimes")
		if err == nil {
			t.Fatalf("%s leg: sometimes accepted", l)
		}
		if want := strings.Join(Words(l), ", "); !strings.Contains(err.Error(), want) {
			t.Errorf("%s leg: error %q does not list %q", l, err, want)
		}
	}
}

func TestParseFallback(t *testing.T) {
	tests := []struct {
		name    string
		word    string
		want    Fallback
		wantErr bool
	}{
		{"grace out sends the FIN after all", "fin", FallbackFIN, false},
		{"grace out ends with a safe reset", "reset", FallbackReset, false},
		{"empty", "", "", true},
		{"capitalised", "FIN", "", true},
		{"the record's word for a reset by the peer", "peer_reset", "", true},
		{"a target word", "nowhere", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFallback(tt.word)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseFallback(%q) = %q, %v; want %q, error %t", tt.word, got, err, tt.want, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "fin, reset") {
				t.Errorf("ParseFallback(%q) error %q does not name fin, reset", tt.word, err)
			}
			if err == nil && got.String() != tt.word {
				t.Errorf("Fallback(%q).String() = %q", tt.word, got.String())
			}
		})
	}
}

func TestTargetWord(t *testing.T) {
	tests := []struct {
		name   string
		leg    Leg
		target Target
		want   string
	}{
		{"front leg, TIME-WAIT on the proxy", Front, TargetProxy, "proxy"},
		{"front leg, TIME-WAIT on the client", Front, TargetPeer, "client"},
		{"front leg, no TIME-WAIT", Front, TargetNowhere, "nowhere"},
		{"back leg, TIME-WAIT on the proxy", Back, TargetProxy, "proxy"},
		{"back leg, TIME-WAIT on the backend", Back, TargetPeer, "backend"},
		{"back leg, no TIME-WAIT", Back, TargetNowhere, "nowhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.target.Word(tt.leg); got != tt.want {
				t.Fatalf("%s.Word(%s) = %q, want %q", tt.target, tt.leg, got, tt.want)
			}
			// The word a record carries is the word the user writes.
			back, err := ParseTarget(tt.leg, tt.want)
			if err != nil || back != tt.target {
				t.Errorf("ParseTarget(%s, %q) = %q, %v; want %q", tt.leg, tt.want, back, err, tt.target)
			}
		})
	}
}

func TestTimeWait(t *testing.T) {
	tests := []struct {
		name     string
		firstFIN Side
		close    Close
		bothFINs bool
		want     Side
	}{
		{"proxy FIN first, peer answers with its FIN", SideProxy, CloseFIN, true, SideProxy},
		{"client FIN first, proxy FIN second", SideClient, CloseFIN, true, SideClient},
		{"backend FIN first, proxy FIN second", SideBackend, CloseFIN, true, SideBackend},
		{"proxy FIN first, peer never answers", SideProxy, CloseFIN, false, SideNone},
		{"client FIN first, proxy never sends its own", SideClient, CloseFIN, false, SideNone},
		{"client FIN first, proxy answers with a safe reset", SideClient, CloseReset, true, SideNone},
		{"backend FIN first, proxy answers with a safe reset", SideBackend, CloseReset, true, SideNone},
		{"proxy withheld its FIN, grace ran out, safe reset", SideNone, CloseReset, false, SideNone},
		{"proxy FIN first, then the peer resets", SideProxy, ClosePeerReset, false, SideNone},
		{"client resets after both FINs", SideClient, ClosePeerReset, true, SideNone},
		{"socket error after both FINs", SideProxy, CloseError, true, SideNone},
		{"FINs crossed: both hold TIME-WAIT", SideBoth, CloseFIN, true, SideBoth},
		{"order of the FINs unknown", SideUnknown, CloseFIN, true, SideUnknown},
		{"FINs crossed, then a reset", SideBoth, CloseReset, true, SideNone},
		{"nobody sent a FIN", SideNone, CloseFIN, true, SideNone},
		{"first FIN unknown", "", CloseFIN, true, SideNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TimeWait(tt.firstFIN, tt.close, tt.bothFINs); got != tt.want {
				t.Fatalf("TimeWait(%q, %q, %t) = %q, want %q", tt.firstFIN, tt.close, tt.bothFINs, got, tt.want)
			}
		})
	}
}

// TestTimeWaitAnyResetLeavesNone checks "any reset leaves none" for every
// side that may have sent the first FIN.
func TestTimeWaitAnyResetLeavesNone(t *testing.T) {
	for _, s := range []Side{SideClient, SideBackend, SideProxy, SideNone, SideBoth, SideUnknown} {
		for _, c := range []Close{CloseReset, ClosePeerReset, CloseError} {
			for _, both := range []bool{false, true} {
				if got := TimeWait(s, c, both); got != SideNone {
					t.Errorf("TimeWait(%s, %s, %t) = %s, want none", s, c, both, got)
				}
			}
		}
	}
}

// FuzzParseTarget checks that whatever a user writes, ParseTarget either
// refuses it or returns a target whose word is exactly what was written.
func FuzzParseTarget(f *testing.F) {
	for _, w := range []string{"proxy", "client", "backend", "nowhere", "auto", "peer", ""} {
		f.Add(w)
	}
	f.Fuzz(func(t *testing.T, word string) {
		for _, l := range []Leg{Front, Back} {
			tg, err := ParseTarget(l, word)
			if err != nil {
				if tg != "" {
					t.Fatalf("ParseTarget(%s, %q) returned %q with error %v", l, word, tg, err)
				}
				continue
			}
			if got := tg.Word(l); got != word {
				t.Fatalf("ParseTarget(%s, %q) = %q, whose word is %q", l, word, tg, got)
			}
		}
	})
}

func ExampleDecide() {
	// The back leg wants TIME-WAIT on the backend. The client's request was
	// answered and the client closed, so the proxy ends the back leg
	// first: it withholds its FIN and waits for the backend's.
	f := Facts{Leg: Back, Target: TargetPeer, Fallback: FallbackReset, Event: SendDone,
		Grace: Grace{Max: time.Second}, OtherSideDone: true}
	fmt.Println(Decide(f).Action)

	// The backend stays silent for the grace: the fallback applies.
	f.Event = GraceExpired
	fmt.Println(Decide(f).Action)

	// Had the backend sent its FIN in time, the proxy's FIN would be second
	// and TIME-WAIT would land on the backend.
	f.Event = PeerFIN
	d := Decide(f)
	fmt.Println(d.Action, Lands(Back, d.Action, true))

	// A client that half-closed after its request has sent nothing since:
	// the backend may be reading to EOF. It gets a brief probe; silent
	// through it, it gets the FIN.
	f = Facts{Leg: Back, Target: TargetPeer, Fallback: FallbackReset, Event: SendDone, PeerMayAwaitEOF: true,
		Grace: Grace{Max: time.Second}}
	d = Decide(f)
	fmt.Println(d.Action, d.Wait, d.Probe)
	f.Event = ProbeExpired
	d = Decide(f)
	fmt.Println(d.Action, d.Reason)
	// Output:
	// withhold
	// safe_reset
	// fin backend
	// withhold 50ms true
	// fin peer_may_await_eof
}

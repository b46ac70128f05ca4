package policy

import (
	"fmt"
	"strings"
	"testing"
)

// decideRow is one line of DESIGN.md's close policy table for one target,
// one kind of event and one fallback. The same rows hold on both legs; the
// test runs each on the front and on the back leg.
type decideRow struct {
	target   Target
	kind     Kind
	fallback Fallback
	want     Action
	// lands is where TIME-WAIT ends up once the action is carried out and
	// the leg closes: "proxy", "peer" or "none". Empty while the action
	// leaves the leg open (WithholdFIN).
	lands string
	// never marks an event the relay does not send for this target: a leg
	// that wants TIME-WAIT on the proxy never withholds its FIN. DESIGN.md
	// does not rule on these; the row pins what Decide does so that a change
	// is deliberate.
	never bool
}

// situation words each kind of event as something that happens on a leg;
// {peer} stands for the peer's name on that leg.
var situation = map[Kind]string{
	ProxyFirst:           "proxy ends first",
	PeerFirst:            "{peer} ends first",
	PeerFINAfterWithhold: "proxy ends first, {peer}'s FIN arrives within the grace",
	GraceExpired:         "proxy ends first, grace expires",
	LateData:             "proxy ends first, {peer} sends late data while the FIN is withheld",
}

var decideTable = []decideRow{
	// target proxy: "FIN now; read until the peer's FIN → TIME-WAIT on proxy".
	{TargetProxy, ProxyFirst, FallbackFIN, FINFirst, "proxy", false},
	{TargetProxy, ProxyFirst, FallbackReset, FINFirst, "proxy", false},
	// target proxy, peer-first: "FIN second → TIME-WAIT on peer
	// (unavoidable; recorded as wanted≠got)".
	{TargetProxy, PeerFirst, FallbackFIN, FINSecond, "peer", false},
	{TargetProxy, PeerFirst, FallbackReset, FINSecond, "peer", false},
	// The proxy target never withholds its FIN, so these never reach Decide.
	{TargetProxy, PeerFINAfterWithhold, FallbackFIN, FINSecond, "peer", true},
	{TargetProxy, PeerFINAfterWithhold, FallbackReset, FINSecond, "peer", true},
	{TargetProxy, GraceExpired, FallbackFIN, FINFirst, "proxy", true},
	{TargetProxy, GraceExpired, FallbackReset, SafeReset, "none", true},
	{TargetProxy, LateData, FallbackFIN, FINFirst, "proxy", true},
	{TargetProxy, LateData, FallbackReset, SafeReset, "none", true},

	// target peer, proxy-first: "withhold FIN; wait for the peer's FIN …".
	{TargetPeer, ProxyFirst, FallbackFIN, WithholdFIN, "", false},
	{TargetPeer, ProxyFirst, FallbackReset, WithholdFIN, "", false},
	// target peer, peer-first: "FIN second → TIME-WAIT on peer".
	{TargetPeer, PeerFirst, FallbackFIN, FINSecond, "peer", false},
	{TargetPeer, PeerFirst, FallbackReset, FINSecond, "peer", false},
	// "… then FIN → TIME-WAIT on peer".
	{TargetPeer, PeerFINAfterWithhold, FallbackFIN, FINSecond, "peer", false},
	{TargetPeer, PeerFINAfterWithhold, FallbackReset, FINSecond, "peer", false},
	// "Grace out → fallback ("fin": TIME-WAIT on proxy, or "reset": safe reset)".
	{TargetPeer, GraceExpired, FallbackFIN, FINFirst, "proxy", false},
	{TargetPeer, GraceExpired, FallbackReset, SafeReset, "none", false},
	// "the session then ends at once by the fallback (late_data)".
	{TargetPeer, LateData, FallbackFIN, FINFirst, "proxy", false},
	{TargetPeer, LateData, FallbackReset, SafeReset, "none", false},

	// target nowhere, proxy-first: "as peer, but end with a safe reset".
	{TargetNowhere, ProxyFirst, FallbackFIN, WithholdFIN, "", false},
	{TargetNowhere, ProxyFirst, FallbackReset, WithholdFIN, "", false},
	// target nowhere, peer-first: "safe reset … → no TIME-WAIT".
	{TargetNowhere, PeerFirst, FallbackFIN, SafeReset, "none", false},
	{TargetNowhere, PeerFirst, FallbackReset, SafeReset, "none", false},
	{TargetNowhere, PeerFINAfterWithhold, FallbackFIN, SafeReset, "none", false},
	{TargetNowhere, PeerFINAfterWithhold, FallbackReset, SafeReset, "none", false},
	// The nowhere target ends with a safe reset whatever the fallback says.
	{TargetNowhere, GraceExpired, FallbackFIN, SafeReset, "none", false},
	{TargetNowhere, GraceExpired, FallbackReset, SafeReset, "none", false},
	{TargetNowhere, LateData, FallbackFIN, SafeReset, "none", false},
	{TargetNowhere, LateData, FallbackReset, SafeReset, "none", false},
}

// name words a row on a leg as a situation, e.g. "back leg, target backend,
// proxy ends first, grace expires, fallback reset".
func (r decideRow) name(l Leg) string {
	s := strings.ReplaceAll(situation[r.kind], "{peer}", string(l.Peer()))
	n := fmt.Sprintf("%s leg, target %s, %s, fallback %s", l, r.target.Word(l), s, r.fallback)
	if r.never {
		n += " (never sent: the proxy target does not withhold)"
	}
	return n
}

func TestDecide(t *testing.T) {
	for _, l := range []Leg{Front, Back} {
		for _, r := range decideTable {
			t.Run(r.name(l), func(t *testing.T) {
				e := Event{Leg: l, Target: r.target, Fallback: r.fallback, Kind: r.kind}
				if got := Decide(e); got != r.want {
					t.Fatalf("Decide(%+v) = %s, want %s", e, got, r.want)
				}
				checkLands(t, l, r)
			})
		}
	}
}

// checkLands carries the decided action to its end with TimeWait and checks
// where TIME-WAIT lands, as the table's arrows say.
func checkLands(t *testing.T, l Leg, r decideRow) {
	t.Helper()
	var got Side
	switch r.want {
	case FINFirst:
		got = TimeWait(SideProxy, CloseFIN, true)
	case FINSecond:
		got = TimeWait(l.Peer(), CloseFIN, true)
	case SafeReset:
		// An RST answered to the peer's FIN, or sent once a grace ran out.
		got = TimeWait(l.Peer(), CloseReset, true)
	case WithholdFIN:
		if r.lands != "" {
			t.Fatalf("row says TIME-WAIT lands on %s, but %s leaves the leg open", r.lands, r.want)
		}
		return
	}
	want := map[string]Side{"proxy": SideProxy, "peer": l.Peer(), "none": SideNone}[r.lands]
	if got != want {
		t.Errorf("after %s TIME-WAIT lands on %s, want %s", r.want, got, want)
	}
}

// TestDecideTableIsExhaustive guards the table itself: every target × kind ×
// fallback appears exactly once, so TestDecide covers every leg × target ×
// kind × fallback.
func TestDecideTableIsExhaustive(t *testing.T) {
	targets := []Target{TargetProxy, TargetPeer, TargetNowhere}
	kinds := []Kind{ProxyFirst, PeerFirst, PeerFINAfterWithhold, GraceExpired, LateData}
	fallbacks := []Fallback{FallbackFIN, FallbackReset}
	seen := map[decideRow]int{}
	for _, r := range decideTable {
		seen[decideRow{target: r.target, kind: r.kind, fallback: r.fallback}]++
	}
	for _, tg := range targets {
		for _, k := range kinds {
			for _, f := range fallbacks {
				if n := seen[decideRow{target: tg, kind: k, fallback: f}]; n != 1 {
					t.Errorf("target %s, kind %s, fallback %s: %d rows, want 1", tg, k, f, n)
				}
			}
		}
	}
	if want := len(targets) * len(kinds) * len(fallbacks); len(decideTable) != want {
		t.Errorf("table has %d rows, want %d", len(decideTable), want)
	}
	for k := range situation {
		if !contains(kinds, k) {
			t.Errorf("situation names kind %s the table does not cover", k)
		}
	}
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
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
	for _, s := range []Side{SideClient, SideBackend, SideProxy, SideNone} {
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
	// answered and the front leg is done, so the proxy ends the back leg
	// first: it withholds its FIN and waits for the backend's.
	e := Event{Leg: Back, Target: TargetPeer, Fallback: FallbackReset, Kind: ProxyFirst}
	fmt.Println(Decide(e))

	// The backend stays silent for peer_fin_grace: the fallback applies.
	e.Kind = GraceExpired
	fmt.Println(Decide(e))

	// Had the backend sent its FIN in time, the proxy's FIN would be second
	// and TIME-WAIT would land on the backend.
	e.Kind = PeerFINAfterWithhold
	act := Decide(e)
	fmt.Println(act, TimeWait(Back.Peer(), CloseFIN, true))
	// Output:
	// withhold_fin
	// safe_reset
	// fin_second backend
}

package doctor

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

// holders predicts what the engine does: per leg and mode it tells
// policy.Decide whether the other side is done (engine's otherSideDone),
// which decides how a grace ends when the target or fallback would reset.
func TestHolders(t *testing.T) {
	const (
		tcpFront  = otherReading // a backend's FIN never says the client stopped reading
		tcpBack   = otherClient  // done only if the client closed after the whole answer
		http1Legs = otherDone    // ended alone between exchanges
	)
	cases := []struct {
		name                         string
		leg                          policy.Leg
		other                        otherSide
		target                       policy.Target
		fallback                     policy.Fallback
		peerFirst, proxyFirst, grace string
		graceReading                 string // tcp back leg, when the client had not read the whole answer
	}{
		{"tcp front leg, target proxy", policy.Front, tcpFront, policy.TargetProxy, policy.FallbackFIN, "client", "proxy", "", ""},
		{"tcp front leg, target client, fallback fin", policy.Front, tcpFront, policy.TargetPeer, policy.FallbackFIN, "client", "client", "proxy", ""},
		// The walkthrough's bugs: a client silent at the grace's end gets a
		// FIN in tcp mode, whatever the target or fallback would reset.
		{"tcp front leg, target client, fallback reset", policy.Front, tcpFront, policy.TargetPeer, policy.FallbackReset, "client", "client", "proxy", ""},
		{"tcp front leg, target nowhere, fallback fin", policy.Front, tcpFront, policy.TargetNowhere, policy.FallbackFIN, "none", "none", "proxy", ""},
		{"tcp front leg, target nowhere, fallback reset", policy.Front, tcpFront, policy.TargetNowhere, policy.FallbackReset, "none", "none", "proxy", ""},
		{"tcp front leg, auto (withholds only as nowhere)", policy.Front, tcpFront, policy.TargetAuto, policy.FallbackFIN, "auto", "auto", "proxy", ""},
		// http1 ends the front leg alone: the exchange tells, a reset is taken.
		{"http1 front leg, target proxy", policy.Front, http1Legs, policy.TargetProxy, policy.FallbackFIN, "client", "proxy", "", ""},
		{"http1 front leg, target client, fallback fin", policy.Front, http1Legs, policy.TargetPeer, policy.FallbackFIN, "client", "client", "proxy", ""},
		{"http1 front leg, target client, fallback reset", policy.Front, http1Legs, policy.TargetPeer, policy.FallbackReset, "client", "client", "none", ""},
		{"http1 front leg, target nowhere", policy.Front, http1Legs, policy.TargetNowhere, policy.FallbackFIN, "none", "none", "none", ""},
		{"http1 front leg, auto", policy.Front, http1Legs, policy.TargetAuto, policy.FallbackFIN, "auto", "auto", "none", ""},
		// A tcp back leg resets only after a client that read the whole answer.
		{"tcp back leg, target proxy", policy.Back, tcpBack, policy.TargetProxy, policy.FallbackReset, "backend", "proxy", "", ""},
		{"tcp back leg, target backend, fallback reset", policy.Back, tcpBack, policy.TargetPeer, policy.FallbackReset, "backend", "backend", "none", "proxy"},
		{"tcp back leg, target backend, fallback fin", policy.Back, tcpBack, policy.TargetPeer, policy.FallbackFIN, "backend", "backend", "proxy", ""},
		{"tcp back leg, target nowhere", policy.Back, tcpBack, policy.TargetNowhere, policy.FallbackReset, "none", "none", "none", "proxy"},
		{"tcp back leg, auto, fallback reset", policy.Back, tcpBack, policy.TargetAuto, policy.FallbackReset, "auto", "auto", "none", "proxy"},
		{"tcp back leg, auto, fallback fin", policy.Back, tcpBack, policy.TargetAuto, policy.FallbackFIN, "auto", "auto", "auto", "proxy"},
		{"http1 back leg, target backend, fallback reset", policy.Back, http1Legs, policy.TargetPeer, policy.FallbackReset, "backend", "backend", "none", ""},
		{"http1 back leg, target nowhere", policy.Back, http1Legs, policy.TargetNowhere, policy.FallbackFIN, "none", "none", "none", ""},
		{"http1 back leg, target backend, fallback fin", policy.Back, http1Legs, policy.TargetPeer, policy.FallbackFIN, "backend", "backend", "proxy", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := holders(tc.leg, config.Close{TimeWait: tc.target, Fallback: tc.fallback}, tc.other)
			if h.peerFirst != tc.peerFirst || h.proxyFirst != tc.proxyFirst || h.graceOut != tc.grace || h.graceOutReading != tc.graceReading {
				t.Errorf("holders: peer-first %q, proxy-first %q, grace out %q (client reading: %q); want %q, %q, %q (%q)",
					h.peerFirst, h.proxyFirst, h.graceOut, h.graceOutReading, tc.peerFirst, tc.proxyFirst, tc.grace, tc.graceReading)
			}
		})
	}
}

// The mode a leg runs in is its backend's protocol, for a listener too:
// the operator's walkthrough (a tcp listener with time_wait = "nowhere",
// fallback = "fin", whose client stays silent: the kernel showed the
// proxy's TIME-WAIT) against an http1 one, which resets.
func TestLegsByMode(t *testing.T) {
	for _, tc := range []struct {
		protocol string
		grace    string
		line     string // the leg's TIME-WAIT line, as printed
		note     string // a part of its note
	}{
		{"tcp", "proxy",
			"    TIME-WAIT when the client ends first: nowhere; when the proxy ends first and the client closes within the grace: nowhere; when it does not (grace out): proxy (accepted: cheap)\n",
			"a client still silent when the grace ends gets a FIN, not a reset (records: other_side_reading)"},
		{"http1", "none",
			"    TIME-WAIT when the client ends first: nowhere; when the proxy ends first and the client closes within the grace: nowhere; when it does not (grace out): nowhere\n",
			"an Upgrade or CONNECT tunnel ends as a tcp session does: a client silent past the grace leaves TIME-WAIT on the proxy"},
	} {
		t.Run(tc.protocol, func(t *testing.T) {
			cfg := mustParse(t, legConfig("time_wait = \"nowhere\"\nfallback = \"fin\"", "protocol = \""+tc.protocol+"\""))
			rep := &Report{Config: "test.toml", Rate: 100, Legs: legs(cfg, 100, 28232, nil)}
			front := rep.Legs[0]
			if front.Leg != "front" || front.Protocol != tc.protocol || front.GraceOut != tc.grace {
				t.Fatalf("front leg %+v; want protocol %s, grace out %q", front, tc.protocol, tc.grace)
			}
			if !strings.Contains(front.Note, tc.note) {
				t.Errorf("front leg's note %q lacks %q", front.Note, tc.note)
			}
			var b strings.Builder
			(&printer{w: &b}).legs(rep)
			if !strings.Contains(b.String(), tc.line) {
				t.Errorf("printed legs:\n%s\nwant the line\n%s", b.String(), tc.line)
			}
		})
	}
}

// A tcp back leg's grace ends by a reset only after a client that read the
// whole answer: the printed line says both.
func TestBackLegGraceOutSaysTheClient(t *testing.T) {
	for _, tc := range []struct {
		protocol, want string
	}{
		{"tcp", "when it does not (grace out): nowhere if the client had read the whole answer, else proxy (dialer: pins a port)\n"},
		{"http1", "when it does not (grace out): nowhere\n"},
	} {
		cfg := mustParse(t, legConfig(`time_wait = "proxy"`, "protocol = \""+tc.protocol+"\"\n[backend.close]\ntime_wait = \"backend\"\nfallback = \"reset\""))
		rep := &Report{Rate: 100, Legs: legs(cfg, 100, 28232, nil)}
		var b strings.Builder
		(&printer{w: &b}).legs(rep)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%s: printed legs:\n%s\nwant a line ending %q", tc.protocol, b.String(), tc.want)
		}
	}
}

// legConfig is one listener and its backend with the given back-leg keys.
func legConfig(front, back string) string {
	return `[[listener]]
name = "web"
listen = "0.0.0.0:8080"
backend = "app"
  [listener.close]
` + front + `
[[backend]]
name = "app"
address = "10.0.0.2:8081"
` + back
}

func TestPortBudget(t *testing.T) {
	cases := []struct {
		name       string
		front      string
		back       string
		rate       float64
		usable     int
		wantWarn   []string // subjects of port_budget warnings
		wantPinned map[string]int
	}{
		{"back leg proxy, tcp, 1000/s over 1000 ports", `time_wait = "nowhere"`, "[backend.close]\ntime_wait = \"proxy\"", 1000, 1000,
			[]string{`backend "app"`}, map[string]int{"front": 0, "back": 60000}},
		{"back leg backend: the proxy pins nothing", `time_wait = "nowhere"`, "[backend.close]\ntime_wait = \"backend\"", 1000, 1000,
			nil, map[string]int{"front": 0, "back": 0}},
		{"back leg proxy under half the range", `time_wait = "nowhere"`, "[backend.close]\ntime_wait = \"proxy\"", 8, 1000,
			nil, map[string]int{"back": 480}},
		{"back leg proxy just over half the range", `time_wait = "nowhere"`, "[backend.close]\ntime_wait = \"proxy\"", 9, 1000,
			[]string{`backend "app"`}, map[string]int{"back": 540}},
		{"back leg proxy, http1 pools: no pinning", `time_wait = "nowhere"`, "protocol = \"http1\"\n[backend.close]\ntime_wait = \"proxy\"", 1000, 1000,
			nil, map[string]int{"back": 0}},
		{"back leg proxy, range unknown: no budget to judge", `time_wait = "nowhere"`, "[backend.close]\ntime_wait = \"proxy\"", 1000, 0,
			nil, map[string]int{"back": 60000}},
		{"front leg proxy: the load balancer pins when it ends first", `time_wait = "proxy"`, "", 1000, 1000,
			[]string{`listener "web"`}, map[string]int{"front": 60000, "back": 0}},
		{"front leg client at a modest rate", `time_wait = "client"`, "", 100, 1000,
			nil, map[string]int{"front": 6000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := mustParse(t, legConfig(tc.front, tc.back))
			rep := &Report{Legs: legs(cfg, tc.rate, tc.usable, nil)}
			for _, lg := range rep.Legs {
				if want, ok := tc.wantPinned[lg.Leg]; ok && lg.Pinned != want {
					t.Errorf("%s leg pins %d ports, want %d", lg.Leg, lg.Pinned, want)
				}
			}
			warns, _ := advise(rep, &kernel{})
			var got []string
			for _, w := range warns {
				if w.Kind == "port_budget" {
					got = append(got, w.Subject)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.wantWarn, ",") {
				t.Errorf("port budget warnings about %q, want %q: %+v", got, tc.wantWarn, warns)
			}
		})
	}
}

// A backend behind two listeners sees both listeners' connections.
func TestBackendRateSumsListeners(t *testing.T) {
	cfg := mustParse(t, legConfig(`time_wait = "nowhere"`, "[backend.close]\ntime_wait = \"proxy\"")+`
[[listener]]
name = "web2"
listen = "0.0.0.0:8081"
backend = "app"
`)
	for _, lg := range legs(cfg, 10, 28232, nil) {
		if lg.Leg == "back" && (lg.Rate != 20 || lg.Pinned != 1200) {
			t.Errorf("back leg: rate %g, pinned %d; want 20, 1200", lg.Rate, lg.Pinned)
		}
	}
}

// The recommendation for a back leg over budget is the TOML change that
// moves TIME-WAIT to the backend, with a reset fallback.
func TestBackLegRecommendation(t *testing.T) {
	cfg := mustParse(t, legConfig(`time_wait = "nowhere"`, "[backend.close]\ntime_wait = \"proxy\"\nfallback = \"fin\""))
	rep := &Report{Legs: legs(cfg, 1000, 28232, nil)}
	_, recs := advise(rep, &kernel{})
	want := `backend "app": set [backend.close] time_wait = "backend", fallback = "reset"`
	if len(recs) == 0 || recs[0].Line != want {
		t.Errorf("recommendations %+v, want first %q", recs, want)
	}
}

// Ports are pinned per destination: with several servers the busiest one
// counts, by its weight's share.
func TestBackLegPinnedPerServer(t *testing.T) {
	cfg := mustParse(t, `[[listener]]
name = "web"
listen = "0.0.0.0:8080"
backend = "app"
[[backend]]
name = "app"
servers = ["10.0.0.2:80", { address = "10.0.0.3:80", weight = 3 }]
  [backend.close]
  time_wait = "proxy"
`)
	for _, lg := range legs(cfg, 100, 28232, nil) {
		if lg.Leg != "back" {
			continue
		}
		if lg.Pinned != 4500 || !strings.Contains(lg.Note, "busiest of 2 servers (75%") {
			t.Errorf("back leg: pinned %d note %q; want 4500 (75%% of 100/s for 60 s) toward the busiest server", lg.Pinned, lg.Note)
		}
	}
}

// A back leg toward servers whose TIME-WAIT ports connect() reuses after
// 1 s pins a second of connections, not a minute's: no port_budget
// warning at 500/s toward loopback with tcp_tw_reuse = 2, where doctor
// warned of 106 % of the range.
func TestBackLegPinnedWithReuse(t *testing.T) {
	cfg := mustParse(t, `[[listener]]
name = "web"
listen = "0.0.0.0:8080"
backend = "app"
[listener.close]
time_wait = "nowhere"
[[backend]]
name = "app"
address = "127.0.0.1:8081"
[backend.close]
time_wait = "proxy"
`)
	k := &kernel{twReuse: figure{v: 2, ok: true}, timestamps: figure{v: 1, ok: true}}
	for _, tc := range []struct {
		reuses                func(netip.Addr) bool
		pinned, secs, budgets int
	}{{k.reuses, 500, 1, 0}, {nil, 30000, 60, 1}} {
		rep := &Report{Legs: legs(cfg, 500, 28232, tc.reuses)}
		for _, lg := range rep.Legs {
			if lg.Leg == "back" && (lg.Pinned != tc.pinned || lg.pinnedFor() != tc.secs) {
				t.Errorf("reuse %v: back leg pins %d ports for %d s, want %d for %d", tc.reuses != nil, lg.Pinned, lg.pinnedFor(), tc.pinned, tc.secs)
			}
		}
		warns, _ := advise(rep, k)
		n := 0
		for _, w := range warns {
			if w.Kind == "port_budget" {
				n++
			}
		}
		if n != tc.budgets {
			t.Errorf("reuse %v: %d port_budget warnings, want %d: %+v", tc.reuses != nil, n, tc.budgets, warns)
		}
	}
}

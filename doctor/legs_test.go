package doctor

import (
	"strings"
	"testing"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

func TestHolders(t *testing.T) {
	cases := []struct {
		name                         string
		leg                          policy.Leg
		target                       policy.Target
		fallback                     policy.Fallback
		peerFirst, proxyFirst, grace string
	}{
		{"front leg, target proxy", policy.Front, policy.TargetProxy, policy.FallbackFIN, "client", "proxy", ""},
		{"front leg, target client, fallback fin", policy.Front, policy.TargetPeer, policy.FallbackFIN, "client", "client", "proxy"},
		{"front leg, target client, fallback reset", policy.Front, policy.TargetPeer, policy.FallbackReset, "client", "client", "none"},
		{"front leg, target nowhere", policy.Front, policy.TargetNowhere, policy.FallbackFIN, "none", "none", "none"},
		{"back leg, target proxy", policy.Back, policy.TargetProxy, policy.FallbackReset, "backend", "proxy", ""},
		{"back leg, target backend, fallback reset", policy.Back, policy.TargetPeer, policy.FallbackReset, "backend", "backend", "none"},
		{"back leg, target backend, fallback fin", policy.Back, policy.TargetPeer, policy.FallbackFIN, "backend", "backend", "proxy"},
		{"back leg, target nowhere", policy.Back, policy.TargetNowhere, policy.FallbackReset, "none", "none", "none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			peer, proxy, grace := holders(tc.leg, config.Close{TimeWait: tc.target, Fallback: tc.fallback})
			if peer != tc.peerFirst || proxy != tc.proxyFirst || grace != tc.grace {
				t.Errorf("holders: peer-first %q, proxy-first %q, grace out %q; want %q, %q, %q",
					peer, proxy, grace, tc.peerFirst, tc.proxyFirst, tc.grace)
			}
		})
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
			rep := &Report{Legs: legs(cfg, tc.rate, tc.usable)}
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
	for _, lg := range legs(cfg, 10, 28232) {
		if lg.Leg == "back" && (lg.Rate != 20 || lg.Pinned != 1200) {
			t.Errorf("back leg: rate %g, pinned %d; want 20, 1200", lg.Rate, lg.Pinned)
		}
	}
}

// The recommendation for a back leg over budget is the TOML change that
// moves TIME-WAIT to the backend, with a reset fallback.
func TestBackLegRecommendation(t *testing.T) {
	cfg := mustParse(t, legConfig(`time_wait = "nowhere"`, "[backend.close]\ntime_wait = \"proxy\"\nfallback = \"fin\""))
	rep := &Report{Legs: legs(cfg, 1000, 28232)}
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
	for _, lg := range legs(cfg, 100, 28232) {
		if lg.Leg != "back" {
			continue
		}
		if lg.Pinned != 4500 || !strings.Contains(lg.Note, "busiest of 2 servers (75%") {
			t.Errorf("back leg: pinned %d note %q; want 4500 (75%% of 100/s for 60 s) toward the busiest server", lg.Pinned, lg.Note)
		}
	}
}

package doctor

import (
	"fmt"
	"math"
	"strings"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/policy"
)

// defaultRangePorts is Linux's default ip_local_port_range, 32768–60999:
// the budget assumed for a load balancer, whose settings doctor cannot read.
const defaultRangePorts = 60999 - 32768 + 1

// warnShare is the share of a dialer's usable ports that, pinned in
// TIME-WAIT toward one destination, earns a warning.
const warnShare = 0.5

// legs judges each listener (front leg) and backend (back leg) of cfg at
// rate new connections/s per listener; usable is this host's ephemeral
// port budget (0 when unknown).
func legs(cfg *config.Config, rate float64, usable int) []Leg {
	var out []Leg
	for _, l := range cfg.Listeners {
		out = append(out, frontLeg(l, rate))
	}
	for _, b := range cfg.Backends {
		n := 0
		for _, l := range cfg.Listeners {
			if l.Backend == b.Name {
				n++
			}
		}
		out = append(out, backLeg(b, rate*float64(n), usable))
	}
	return out
}

func frontLeg(l config.Listener, rate float64) Leg {
	lg := newLeg(policy.Front, l.Name, l.Close, rate)
	lg.Dialer, lg.Destination = string(policy.SideClient), l.Listen
	lg.Budget = defaultRangePorts
	if lg.PeerFirst == lg.Dialer || lg.ProxyFirst == lg.Dialer {
		lg.Pinned = pinned(rate)
		lg.Note = "the load balancer's port range cannot be read from here: Linux's default 32768-60999 assumed"
	}
	return lg
}

func backLeg(b config.Backend, rate float64, usable int) Leg {
	lg := newLeg(policy.Back, b.Name, b.Close, rate)
	lg.Protocol, lg.Dialer, lg.Destination = string(b.Protocol), string(policy.SideProxy), destinations(b)
	lg.Budget = usable
	switch {
	case b.Protocol == config.ProtocolHTTP1:
		lg.Note = "http1 returns backend connections to the pool after each response: few closes, so little TIME-WAIT whoever holds it"
	case lg.ProxyFirst == lg.Dialer:
		// Ports are pinned per destination: with several servers, toward
		// the busiest one (the largest weight's share of the sessions).
		share, n := busiestShare(b)
		lg.Pinned = pinned(rate * share)
		if n > 1 {
			lg.Note = joinNote(lg.Note, fmt.Sprintf("pinned ports toward the busiest of %d servers (%.0f%% of the sessions)", n, 100*share))
		}
	}
	if b.Source == config.SourceClient && lg.Pinned > 0 {
		lg.Note = joinNote(lg.Note, `source = "client": the ports are pinned per client address, not the proxy's; the figure is for one client sending it all`)
	}
	if lg.GraceOut == lg.Dialer && lg.Note == "" {
		lg.Note = `a backend silent for peer_fin_grace leaves TIME-WAIT on the proxy (fallback = "fin")`
	}
	if usable == 0 {
		lg.Note = joinNote(lg.Note, "this host's port range could not be read: no port budget")
	}
	return lg
}

// busiestShare is the share of b's sessions its largest-weight server
// takes when every server is up, and the number of servers.
func busiestShare(b config.Backend) (float64, int) {
	servers := b.ServerList()
	total, most := 0, 0
	for _, srv := range servers {
		w := max(srv.Weight, 1)
		total += w
		most = max(most, w)
	}
	return float64(most) / float64(total), len(servers)
}

// destinations names the backend's servers, comma-separated.
func destinations(b config.Backend) string {
	var out []string
	for _, srv := range b.ServerList() {
		out = append(out, srv.Address)
	}
	return strings.Join(out, ",")
}

func newLeg(leg policy.Leg, name string, c config.Close, rate float64) Leg {
	lg := Leg{Leg: string(leg), Name: name, TimeWait: c.TimeWait.Word(leg), Fallback: string(c.Fallback), Rate: rate}
	lg.PeerFirst, lg.ProxyFirst, lg.GraceOut = holders(leg, c)
	return lg
}

// holders says who holds TIME-WAIT on a leg when the peer ends it first,
// when the proxy does (and the peer's FIN follows within the grace), and
// when the proxy withheld its FIN and the grace ran out, as policy.Decide
// acts: the proxy-first case assumes a peer that is not waiting for EOF.
func holders(leg policy.Leg, c config.Close) (peerFirst, proxyFirst, graceOut string) {
	if c.TimeWait == policy.TargetAuto {
		return "auto", "auto", "auto" // chosen per close from live figures
	}
	lands := func(ev policy.Event, peerFINIn bool) (policy.Action, string) {
		d := policy.Decide(policy.Facts{Leg: leg, Target: c.TimeWait, Fallback: c.Fallback, Event: ev, PeerFINIn: peerFINIn, OtherSideDone: true})
		return d.Action, string(policy.Lands(leg, d.Action, peerFINIn || ev == policy.PeerFIN))
	}
	_, peerFirst = lands(policy.SendDone, true)
	act, proxyFirst := lands(policy.SendDone, false)
	if act == policy.Withhold {
		_, proxyFirst = lands(policy.PeerFIN, false)
		_, graceOut = lands(policy.GraceExpired, false)
	}
	return peerFirst, proxyFirst, graceOut
}

// pinned is how many ports a dialer holds in TIME-WAIT toward one
// destination when rate connections/s each leave one there for 60 s.
func pinned(rate float64) int {
	return int(math.Round(rate * timeWaitSeconds))
}

// subject names what the leg belongs to: `listener "web"`, `backend "app"`.
func (lg Leg) subject() string {
	if lg.Leg == string(policy.Back) {
		return fmt.Sprintf("backend %q", lg.Name)
	}
	return fmt.Sprintf("listener %q", lg.Name)
}

// overBudget reports whether the leg's dialer would pin more than warnShare
// of its ports.
func (lg Leg) overBudget() bool {
	return lg.Pinned > 0 && lg.Budget > 0 && float64(lg.Pinned) > warnShare*float64(lg.Budget)
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

package doctor

import (
	"cmp"
	"fmt"
	"math"
	"net/netip"
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
// port budget (0 when unknown); reuses, if set, says toward which
// addresses this host's connect() reuses a TIME-WAIT port after 1 s.
func legs(cfg *config.Config, rate float64, usable int, reuses func(netip.Addr) bool) []Leg {
	var out []Leg
	protocols := map[string]config.Protocol{}
	for _, b := range cfg.Backends {
		protocols[b.Name] = b.Protocol
	}
	for _, l := range cfg.Listeners {
		out = append(out, frontLeg(l, protocols[l.Backend], rate))
	}
	for _, b := range cfg.Backends {
		n := 0
		for _, l := range cfg.Listeners {
			if l.Backend == b.Name {
				n++
			}
		}
		out = append(out, backLeg(b, rate*float64(n), usable, reuses))
	}
	return out
}

// frontLeg judges a listener's leg; protocol is its backend's, the mode
// its sessions run in.
func frontLeg(l config.Listener, protocol config.Protocol, rate float64) Leg {
	lg := newLeg(policy.Front, l.Name, l.Close, protocol, rate)
	lg.Dialer, lg.Destination = string(policy.SideClient), l.Listen
	lg.Budget = defaultRangePorts
	if lg.PeerFirst == lg.Dialer || lg.ProxyFirst == lg.Dialer {
		lg.Pinned = pinned(rate)
		lg.Note = "the load balancer's port range cannot be read from here: Linux's default 32768-60999 assumed"
	}
	switch {
	case lg.GraceOut == "":
	case protocol == config.ProtocolHTTP1:
		// An Upgrade or CONNECT tunnel is relayed as a tcp session is.
		if tcp := holders(policy.Front, l.Close, otherReading); tcp.graceOut != lg.GraceOut {
			lg.Note = joinNote(lg.Note, fmt.Sprintf(
				"an Upgrade or CONNECT tunnel ends as a tcp session does: a client silent past the grace leaves TIME-WAIT %s", holderWhere(tcp.graceOut)))
		}
	default:
		// Rule 1 shortens the grace; the engine's OtherSideDone, false
		// here, turns a reset the grace would end by into a FIN.
		note := "tcp mode: "
		if ifDone := holders(policy.Front, l.Close, otherDone); ifDone.graceOut != lg.GraceOut {
			note += "a backend's FIN does not say the client stopped reading, so a client still silent when the grace ends gets a FIN, not a reset (records: other_side_reading); "
		}
		lg.Note = joinNote(lg.Note, note+"the grace is only 50ms (or four round trips) for a client that sent nothing since the proxy's last bytes, as one reading to EOF (records: peer_may_await_eof)")
	}
	return lg
}

func backLeg(b config.Backend, rate float64, usable int, reuses func(netip.Addr) bool) Leg {
	lg := newLeg(policy.Back, b.Name, b.Close, b.Protocol, rate)
	lg.Dialer, lg.Destination = string(policy.SideProxy), destinations(b)
	lg.Budget = usable
	switch {
	case b.Protocol == config.ProtocolHTTP1:
		lg.Note = "http1 returns backend connections to the pool after each response: few closes, so little TIME-WAIT whoever holds it"
	case lg.ProxyFirst == lg.Dialer:
		// Ports are pinned per destination: with several servers, toward
		// the busiest one (the largest weight's share of the sessions).
		share, n := busiestShare(b)
		lg.Pinned, lg.PinnedFor = pinned(rate*share), timeWaitSeconds
		if n > 1 {
			lg.Note = joinNote(lg.Note, fmt.Sprintf("pinned ports toward the busiest of %d servers (%.0f%% of the sessions)", n, 100*share))
		}
		if b.Source != config.SourceClient && reusedToward(b, reuses) {
			lg.Pinned, lg.PinnedFor = int(math.Round(rate*share)), 1
			lg.Note = joinNote(lg.Note, "tcp_tw_reuse: connect() takes a port whose TIME-WAIT toward the backend is older than 1 s, so a port stays pinned 1 s, not 60 (the TIME-WAIT sockets still count toward tcp_max_tw_buckets)")
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
// reusedToward reports whether connect() reuses TIME-WAIT ports toward
// every server of b (addresses only: a name is not known to be covered).
func reusedToward(b config.Backend, reuses func(netip.Addr) bool) bool {
	if reuses == nil {
		return false
	}
	for _, srv := range b.ServerList() {
		ap, err := netip.ParseAddrPort(srv.Address)
		if err != nil || !reuses(ap.Addr()) {
			return false
		}
	}
	return true
}

func destinations(b config.Backend) string {
	var out []string
	for _, srv := range b.ServerList() {
		out = append(out, srv.Address)
	}
	return strings.Join(out, ",")
}

func newLeg(leg policy.Leg, name string, c config.Close, protocol config.Protocol, rate float64) Leg {
	lg := Leg{Leg: string(leg), Name: name, TimeWait: c.TimeWait.Word(leg), Fallback: string(c.Fallback),
		Protocol: string(protocol), Rate: rate}
	h := holders(leg, c, otherSideOf(leg, protocol))
	lg.PeerFirst, lg.ProxyFirst, lg.GraceOut, lg.GraceOutClientReading = h.peerFirst, h.proxyFirst, h.graceOut, h.graceOutReading
	return lg
}

// otherSide is what the engine tells policy.Decide of the other leg when a
// withheld FIN's grace runs out (Facts.OtherSideDone, the engine's
// otherSideDone): whether a reset could cut a stream the other side still
// reads.
type otherSide int

const (
	// otherDone: the leg ends alone, as http1 ends its legs between
	// exchanges: nothing its peer still sends can matter (true).
	otherDone otherSide = iota
	// otherReading: a tcp session's front leg: a backend's FIN says it
	// stopped sending, never that it stopped reading the client (false).
	otherReading
	// otherClient: a tcp session's back leg: true only if the client
	// closed after reading the whole answer.
	otherClient
)

// otherSideOf is the engine's answer for a leg of a session in protocol's
// mode (an empty protocol is tcp, the default).
func otherSideOf(leg policy.Leg, protocol config.Protocol) otherSide {
	switch {
	case protocol == config.ProtocolHTTP1:
		return otherDone
	case leg == policy.Front:
		return otherReading
	}
	return otherClient
}

// holding is who holds TIME-WAIT on a leg (client, backend, proxy, none,
// or auto when chosen live) for each way it may end.
type holding struct {
	peerFirst  string // the peer ends first
	proxyFirst string // the proxy does, and the peer's FIN follows within the grace
	graceOut   string // the proxy withheld its FIN and the peer stayed silent past the grace; "" if it never withholds
	// graceOutReading is, for a tcp back leg when it differs from
	// graceOut, who holds it at the grace's end if the client had not read
	// the whole answer when it closed: graceOut assumes it had.
	graceOutReading string
}

// holders says who holds TIME-WAIT on a leg, as policy.Decide acts on the
// facts the engine gives it for a leg whose other side is other: the
// proxy-first case assumes a peer that is not waiting for EOF.
func holders(leg policy.Leg, c config.Close, other otherSide) holding {
	if c.TimeWait != policy.TargetAuto {
		return holdersAt(leg, c, policy.AutoState{}, other)
	}
	// Chosen per close from live figures. A grace runs out only where auto
	// withheld the FIN; what it ends by is known if every choice that
	// withholds ends it alike, and is auto too otherwise.
	h := holding{peerFirst: "auto", proxyFirst: "auto"}
	var outs, readings []string
	for _, s := range []policy.AutoState{{}, {HostSaving: true}, {PortSaving: true}} {
		a := holdersAt(leg, c, s, other)
		if a.graceOut != "" {
			outs = append(outs, a.graceOut)
			readings = append(readings, cmp.Or(a.graceOutReading, a.graceOut))
		}
	}
	h.graceOut = sameOr(outs, "auto")
	if r := sameOr(readings, "auto"); r != h.graceOut {
		h.graceOutReading = r
	}
	return h
}

// holdersAt is holders with auto's figures at s.
func holdersAt(leg policy.Leg, c config.Close, s policy.AutoState, other otherSide) holding {
	lands := func(ev policy.Event, target policy.Target, peerFINIn, otherSideDone bool) (policy.Decision, string) {
		d := policy.Decide(policy.Facts{Leg: leg, Target: target, Fallback: c.Fallback, Auto: s, Event: ev,
			PeerFINIn: peerFINIn, OtherSideDone: otherSideDone})
		return d, string(policy.Lands(leg, d.Action, peerFINIn || ev == policy.PeerFIN))
	}
	done := other != otherReading // otherClient: the client read the whole answer
	var h holding
	_, h.peerFirst = lands(policy.SendDone, c.TimeWait, true, done)
	d, proxyFirst := lands(policy.SendDone, c.TimeWait, false, done)
	h.proxyFirst = proxyFirst
	if d.Action != policy.Withhold {
		return h
	}
	// The engine keeps the target the first decision put in force (auto
	// resolved) for the events that follow it.
	_, h.proxyFirst = lands(policy.PeerFIN, d.Target, false, done)
	_, h.graceOut = lands(policy.GraceExpired, d.Target, false, done)
	if other == otherClient {
		if _, r := lands(policy.GraceExpired, d.Target, false, false); r != h.graceOut {
			h.graceOutReading = r
		}
	}
	return h
}

// sameOr is the one value in vs, "" if none, or mixed if they differ.
func sameOr(vs []string, mixed string) string {
	if len(vs) == 0 {
		return ""
	}
	for _, v := range vs[1:] {
		if v != vs[0] {
			return mixed
		}
	}
	return vs[0]
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

// holderWhere says where a holder's TIME-WAIT lands, for a sentence.
func holderWhere(holder string) string {
	switch holder {
	case "none":
		return "nowhere"
	case "auto":
		return "where auto chooses"
	}
	return "on the " + holder
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// pinnedFor is how long the leg's pinned ports stay pinned, in seconds.
func (lg Leg) pinnedFor() int {
	if lg.PinnedFor > 0 {
		return lg.PinnedFor
	}
	return timeWaitSeconds
}

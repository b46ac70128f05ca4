package doctor

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/closeproxy/closeproxy/procnet"
)

// Thresholds for host advice.
const (
	// destWarnShare: a destination whose TIME-WAIT holds more than this
	// share of the usable ports is near EADDRNOTAVAIL.
	destWarnShare = 0.5
	// reuseShare: dialing-side pressure worth tcp_tw_reuse = 1.
	reuseShare = 0.1
	// bucketsShare: TIME-WAIT count near tcp_max_tw_buckets.
	bucketsShare = 0.8
	// wideRangeLo..wideRangeHi is the range recommended when ports run short.
	wideRangeLo, wideRangeHi = 10240, 65535
	minSomaxconn             = 4096
	minNoFile                = 65536
)

// advisor gathers warnings and recommendations, each at most once.
type advisor struct {
	warnings []Warning
	recs     []Recommendation
	seen     map[string]bool
}

func (a *advisor) warn(w Warning) { a.warnings = append(a.warnings, w) }

func (a *advisor) recommend(kind, line, why string) {
	if a.seen[line] {
		return
	}
	a.seen[line] = true
	a.recs = append(a.recs, Recommendation{Kind: kind, Line: line, Why: why})
}

// advise turns the report's findings into warnings and recommendations.
func advise(rep *Report, k *kernel) ([]Warning, []Recommendation) {
	a := &advisor{warnings: []Warning{}, recs: []Recommendation{}, seen: map[string]bool{}}
	// dialPressure: some dialer of this host runs short of ports; remote:
	// toward a destination off loopback (tcp_tw_reuse = 2 covers loopback).
	dialPressure, remote := false, false
	for _, lg := range rep.Legs {
		if lg.overBudget() {
			a.legBudget(lg)
			if lg.Leg == "back" {
				dialPressure, remote = true, remote || !onLoopback(lg.Destination)
			}
		}
	}
	for _, d := range rep.TimeWait.TopDestinations {
		if k.reuses(d.Addr.Addr()) {
			continue // connect() takes those older than 1 s: they pin no port
		}
		if d.Share > destWarnShare {
			a.warn(Warning{Kind: "destination_ports", Subject: d.Addr.String(), Text: fmt.Sprintf(
				"%d TIME-WAIT sockets toward %s hold %.0f%% of the %d usable ports: connect() to it fails with EADDRNOTAVAIL at 100%%",
				d.Count, d.Addr, 100*d.Share, rep.TimeWait.UsablePorts)})
		}
		if d.Share > reuseShare {
			dialPressure, remote = true, remote || !d.Addr.Addr().Unmap().IsLoopback()
		}
	}
	if dialPressure {
		a.dialing(k, remote)
	}
	a.buckets(rep.TimeWait, k)
	a.limits(k)
	return a.warnings, a.recs
}

// legBudget warns about a leg whose dialer will run short of ports, and
// says which policy spares it.
func (a *advisor) legBudget(lg Leg) {
	subject, who := lg.subject(), "the load balancer"
	if lg.Leg == "back" {
		who = "the proxy"
	}
	a.warn(Warning{Kind: "port_budget", Subject: subject, Leg: lg.Leg, Text: fmt.Sprintf(
		"%s (%s leg, time_wait = %q): %s, %s holds TIME-WAIT on its own port toward %s; at %g connections/s that pins ≈%d ports for %d s, %.0f%% of %d usable",
		subject, lg.Leg, lg.TimeWait, whenDialerHolds(lg), who, lg.Destination,
		lg.Rate, lg.Pinned, lg.pinnedFor(), 100*float64(lg.Pinned)/float64(lg.Budget), lg.Budget)})
	if lg.Leg == "back" {
		line := fmt.Sprintf("%s: set [backend.close] time_wait = \"backend\"", subject)
		if lg.Fallback != "reset" {
			line += `, fallback = "reset"`
		}
		a.recommend("config", line, fmt.Sprintf(
			"the backend accepted this leg, so its TIME-WAIT pins no port and the proxy's ports toward %s stay free; a silent backend is reset safely instead",
			lg.Destination))
		return
	}
	a.recommend("config", subject+`: set [listener.close] time_wait = "nowhere"`, fmt.Sprintf(
		"a safe reset answers the load balancer's FIN, so no TIME-WAIT lands on either side and its ports toward %s stay free (or have the load balancer keep connections alive)",
		lg.Destination))
}

// whenDialerHolds says in which cases a leg's dialer holds TIME-WAIT.
func whenDialerHolds(lg Leg) string {
	peerFirst, proxyFirst := lg.PeerFirst == lg.Dialer, lg.ProxyFirst == lg.Dialer
	switch {
	case peerFirst && proxyFirst:
		return "whoever ends the leg first"
	case peerFirst:
		return "when the load balancer ends first"
	}
	return "when the proxy ends first (the client closed first)"
}

// onLoopback reports that a leg's destination (host:port) is a loopback
// address; a name or what does not parse is not known to be.
func onLoopback(dest string) bool {
	ap, err := netip.ParseAddrPort(dest)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// dialing recommends what the kernel offers a dialer short of ports;
// remote: toward some destination off loopback, which tcp_tw_reuse = 2
// (loopback only) does not cover.
func (a *advisor) dialing(k *kernel, remote bool) {
	if k.twReuse.ok && (k.twReuse.v == 0 || k.twReuse.v == 2 && remote) {
		a.recommend("sysctl", "sysctl -w net.ipv4.tcp_tw_reuse=1",
			"connect() may then reuse a port whose 4-tuple is in TIME-WAIT after 1 s; it applies to outgoing connections only and needs tcp_timestamps")
	}
	if k.timestamps.ok && k.timestamps.v == 0 {
		a.recommend("sysctl", "sysctl -w net.ipv4.tcp_timestamps=1", "tcp_tw_reuse never applies without TCP timestamps")
	}
	reserved, _ := procnet.ReservedInRange(k.reservedList, wideRangeLo, wideRangeHi) // parsed once already
	if wide := wideRangeHi - wideRangeLo + 1 - reserved; k.usable > 0 && k.usable < wide {
		a.recommend("sysctl", fmt.Sprintf(`sysctl -w net.ipv4.ip_local_port_range="%d %d"`, wideRangeLo, wideRangeHi), fmt.Sprintf(
			"%d ports toward each destination instead of %d; first list the ports your services listen on in net.ipv4.ip_local_reserved_ports so connect() never takes them",
			wide, k.usable))
	}
}

// buckets warns when the TIME-WAIT table is, or was, full.
func (a *advisor) buckets(tw TimeWait, k *kernel) {
	if k.twReuse.ok && k.twReuse.v != 0 && k.timestamps.ok && k.timestamps.v == 0 {
		a.warn(Warning{Kind: "tw_reuse", Subject: "net.ipv4.tcp_tw_reuse",
			Text: fmt.Sprintf("tcp_tw_reuse is %d but tcp_timestamps is 0: it never applies", k.twReuse.v)})
	}
	if !k.maxTW.ok {
		return
	}
	near := float64(tw.Total) > bucketsShare*float64(k.maxTW.v)
	overflowed := k.overflow.ok && k.overflow.v > 0
	if !near && !overflowed {
		return
	}
	var text string
	if near {
		why := []string{fmt.Sprintf("%d TIME-WAIT sockets now, %d allowed", tw.Total, k.maxTW.v)}
		if overflowed {
			why = append(why, fmt.Sprintf("%d destroyed early since boot (TCPTimeWaitOverflow)", k.overflow.v))
		}
		text = "the TIME-WAIT table is full or nearly: " + strings.Join(why, "; ")
	} else {
		// The counter only grows: a table full once, days ago, is not
		// full now.
		text = fmt.Sprintf("the TIME-WAIT table was full at some time since boot: %d TIME-WAIT sockets destroyed early (TCPTimeWaitOverflow); %d held now, %d allowed",
			k.overflow.v, tw.Total, k.maxTW.v)
	}
	a.warn(Warning{Kind: "tw_buckets", Subject: "net.ipv4.tcp_max_tw_buckets", Text: text})
	a.recommend("sysctl", fmt.Sprintf("sysctl -w net.ipv4.tcp_max_tw_buckets=%d", 2*max(k.maxTW.v, tw.Total)),
		"a slot costs a few hundred bytes; a full table ends TIME-WAIT early and loses its protection against late segments (better still: a close policy that keeps TIME-WAIT off this host)")
}

// limits recommends a listen backlog and descriptor limit fit for a proxy.
func (a *advisor) limits(k *kernel) {
	if k.somaxconn.ok && k.somaxconn.v < minSomaxconn {
		a.recommend("sysctl", fmt.Sprintf("sysctl -w net.core.somaxconn=%d", minSomaxconn), fmt.Sprintf(
			"a burst of more than %d connections waiting for accept() is dropped; %d is the default since Linux 5.4", k.somaxconn.v, minSomaxconn))
	}
	if k.nofileOK && k.nofileHard < minNoFile {
		a.recommend("limit", "LimitNOFILE=1048576 in the systemd unit (or ulimit -Hn 1048576)", fmt.Sprintf(
			"closeproxy raises its soft limit to the hard limit, %d, and needs two descriptors per session", k.nofileHard))
	}
}

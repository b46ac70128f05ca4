package integration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The close policy, proved against the kernel: for each leg, each target
// and each order of ending, 200 connections through closeproxy in a fresh
// topology, then the TIME-WAIT sockets each host holds, split by leg, must
// match DESIGN.md's table — and the records' time_wait claims must add up
// to exactly those counts.

// policyConns is the number of connections per case.
const policyConns = 200

// twCounts are the TIME-WAIT sockets per host and leg after a case.
type twCounts struct {
	LB         int // lb, dport = :8080: front leg, client side
	ProxyFront int // proxy, sport = :8080: front leg, proxy side
	ProxyBack  int // proxy, dport = :80: back leg, proxy side
	Web        int // web, sport = :80: back leg, backend side
}

// near reports that every count of c is within slack of want's.
// near reports whether every count is within slack of want's, or below
// it by at most slack+taken: a 4-tuple the kernel gave a new connection
// while the earlier one's TIME-WAIT lasted (on the peer's side: the
// proxy's ephemeral port is free once its own socket is gone) had that
// TIME-WAIT taken over, so reuse can only lower a count.
func (c twCounts) near(want twCounts, slack, taken int) bool {
	for _, d := range []int{c.LB - want.LB, c.ProxyFront - want.ProxyFront, c.ProxyBack - want.ProxyBack, c.Web - want.Web} {
		if d < -slack-taken || d > slack {
			return false
		}
	}
	return true
}

func (c twCounts) String() string {
	return fmt.Sprintf("lb %4d | proxy front %4d | proxy back %4d | web %4d", c.LB, c.ProxyFront, c.ProxyBack, c.Web)
}

// policyCase is one cell of the matrix: a leg, its target, who ends the leg
// first, and how the client and nginx are made to do so.
type policyCase struct {
	name string
	// leg is the leg under test; peerFirst says its peer ends it first (the
	// proxy reads the peer's FIN before the other leg's), else the proxy
	// does (the other leg's FIN came first: nothing more to send).
	leg       string
	peerFirst bool
	anyOrder  bool // either end may close first: the placement is the same
	// slack: connections per host that may land elsewhere, where a peer
	// races the 50 ms probe (a client's close, nginx's answer) on a loaded
	// machine; the records must still agree with the kernel for each.
	slack int
	// Load: the request path prefix ("" or "/close", where nginx answers
	// Connection: close and sends the first FIN), and the load client's
	// -close mode.
	path, close string
	closeDelay  time.Duration // the load client's pause before it closes
	// nginx keepalive_timeout when it keeps connections (0: 75s).
	keepalive   time.Duration
	front, back CloseOpts
	want        twCounts
	reason      string // the leg's reason every record must give, if any
}

// The other leg keeps its defaults (front "proxy"; back "backend" with
// fallback "reset"). Where nginx keeps the back leg alive and the proxy
// withholds its FIN, a short peer_fin_grace ends the wait quickly.
var (
	backDefault = CloseOpts{PeerFinGrace: "300ms"}
	policyCases = []policyCase{
		// Front leg, client closes first: keep-alive request, nginx keeps
		// the connection, the client closes after the Content-Length
		// response. The back leg then ends by its grace and fallback reset.
		{name: "front leg, target proxy, client ends first (wanted proxy, unavoidably got client)",
			leg: "front", peerFirst: true,
			close: "client", front: CloseOpts{TimeWait: "proxy"}, back: backDefault,
			want: twCounts{LB: policyConns}},
		{name: "front leg, target client, client ends first",
			leg: "front", peerFirst: true,
			close: "client", front: CloseOpts{TimeWait: "client"}, back: backDefault,
			want: twCounts{LB: policyConns}},
		{name: "front leg, target nowhere, client ends first",
			leg: "front", peerFirst: true,
			close: "client", front: CloseOpts{TimeWait: "nowhere"}, back: backDefault,
			want: twCounts{}},

		// Front leg, proxy ends first: nginx answers Connection: close, so
		// the back leg ends peer-first and the proxy has nothing more for the
		// client. With target proxy the client waits for the proxy's EOF.
		// With client or nowhere the client has sent nothing since the
		// response, so it may be waiting for EOF (rule 1): the FIN is
		// withheld only for a probe (20 ms). A client that closes within it,
		// as an HTTP client does (5 ms here; nginx's FIN follows its last
		// byte at once, so the case stays proxy-first), keeps the target; one
		// that waits past it (50 ms) gets the FIN, and TIME-WAIT lands on the
		// proxy.
		{name: "front leg, target proxy, proxy ends first (backend closed)",
			leg: "front", peerFirst: false,
			path: "/close", close: "server", front: CloseOpts{TimeWait: "proxy"}, back: backDefault,
			want: twCounts{ProxyFront: policyConns, Web: policyConns}},
		{name: "front leg, target client, proxy ends first (FIN withheld, client closes as it has the body)",
			leg: "front", peerFirst: false,
			path: "/close", close: "client", anyOrder: true, slack: policyConns / 20, front: CloseOpts{TimeWait: "client"}, back: backDefault,
			want: twCounts{LB: policyConns, Web: policyConns}},
		{name: "front leg, target nowhere, proxy ends first (FIN withheld, client closes as it has the body, safe reset)",
			leg: "front", peerFirst: false,
			path: "/close", close: "client", anyOrder: true, slack: policyConns / 20, front: CloseOpts{TimeWait: "nowhere"}, back: backDefault,
			want: twCounts{Web: policyConns}},
		{name: "front leg, target client, proxy ends first (client silent past the probe: FIN passed on)",
			leg: "front", peerFirst: false,
			path: "/close", close: "client", closeDelay: 200 * time.Millisecond, front: CloseOpts{TimeWait: "client"}, back: backDefault,
			want: twCounts{ProxyFront: policyConns, Web: policyConns}, reason: "peer_may_await_eof"},

		// Back leg, backend closes first: nginx answers Connection: close.
		// The front leg (target proxy) then ends proxy-first: TIME-WAIT on
		// the proxy's front side in every case.
		{name: "back leg, target proxy, backend ends first (wanted proxy, unavoidably got backend)",
			leg: "back", peerFirst: true,
			path: "/close", close: "server", back: CloseOpts{TimeWait: "proxy"},
			want: twCounts{ProxyFront: policyConns, Web: policyConns}},
		{name: "back leg, target backend, backend ends first",
			leg: "back", peerFirst: true,
			path: "/close", close: "server", back: CloseOpts{TimeWait: "backend"},
			want: twCounts{ProxyFront: policyConns, Web: policyConns}},
		{name: "back leg, target nowhere, backend ends first",
			leg: "back", peerFirst: true,
			path: "/close", close: "server", back: CloseOpts{TimeWait: "nowhere"},
			want: twCounts{ProxyFront: policyConns}},

		// Back leg, proxy ends first: the client half-closes right after
		// its request, so its FIN reaches the proxy long before nginx (keep-
		// alive) could send one. The front leg ends client-first: TIME-WAIT
		// on lb in every case. nginx has not answered when the client's FIN
		// comes, so it may be waiting for EOF: with target backend or
		// nowhere the FIN is withheld for a probe, nginx answers within it
		// (it was not waiting) and the full grace applies. For target
		// backend without adaptive_grace, nginx's keepalive_timeout (1s) runs
		// out inside peer_fin_grace (3s), so nginx sends its FIN while the
		// proxy withholds its own.
		{name: "back leg, target proxy, proxy ends first (client half-closed)",
			leg: "back", peerFirst: false,
			close: "halfclose", back: CloseOpts{TimeWait: "proxy"},
			want: twCounts{LB: policyConns, ProxyBack: policyConns}},
		{name: "back leg, target backend, proxy ends first (FIN withheld, nginx closes idle)",
			leg: "back", peerFirst: false,
			close: "halfclose", keepalive: time.Second, slack: policyConns / 20, back: CloseOpts{TimeWait: "backend", PeerFinGrace: "3s", AdaptiveGrace: "false"},
			want: twCounts{LB: policyConns, Web: policyConns}},
		// The client half-closed before the answer and may still read what
		// nginx sends after a pause: the grace ends with a FIN, not the safe
		// reset nowhere wants (rule 3), and TIME-WAIT lands on the proxy.
		{name: "back leg, target nowhere, proxy ends first (FIN withheld, grace, client still reading: FIN)",
			leg: "back", peerFirst: false,
			close: "halfclose", slack: policyConns / 20, back: CloseOpts{TimeWait: "nowhere", PeerFinGrace: "300ms"},
			want: twCounts{LB: policyConns, ProxyBack: policyConns}, reason: "other_side_reading"},
		{name: "back leg, target nowhere, proxy ends first (FIN withheld, grace, safe reset)",
			leg: "back", peerFirst: false,
			close: "client", slack: policyConns / 20, back: CloseOpts{TimeWait: "nowhere", PeerFinGrace: "300ms"},
			want: twCounts{LB: policyConns}},
	}
)

// TestClosePolicyMatrix runs every case of DESIGN.md's close policy table on
// both legs, each in a fresh topology: TIME-WAIT lasts 60 s, so counts
// from one case must not mix with the next.
func TestClosePolicyMatrix(t *testing.T) {
	needRoot(t)
	var table []string
	for _, tc := range policyCases {
		t.Run(tc.name, func(t *testing.T) {
			got := runPolicyCase(t, tc)
			table = append(table, fmt.Sprintf("%-85s %s", tc.name, got))
		})
	}
	t.Logf("TIME-WAIT per case (%d connections each):\n%s", policyConns, strings.Join(table, "\n"))
}

func runPolicyCase(t *testing.T, tc policyCase) twCounts {
	const size = 10000
	topo := newCountingTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80),
		NginxOpts{Keepalive: true, KeepaliveTimeout: tc.keepalive, BlobSizes: []int{size}})
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "web", Listen: addrPort(topo.ProxyFront, 8080), Backend: web.Addr.String(),
		Front: tc.front, Back: tc.back,
	}))
	r := runLoad(t, topo, topo.LB, LoadOpts{
		Addr: addrPort(topo.ProxyFront, 8080), N: policyConns, C: 20,
		Path: tc.path + web.BlobPath(size), Close: tc.close, CloseDelay: tc.closeDelay,
		ExpectBytes: size, SHA256: web.BlobSHA256(t, size),
	})
	requireAllOK(t, r, policyConns)
	recs := cp.WaitRecords(t, policyConns, 10*time.Second)
	checkAccessLog(t, web.WaitAccessLog(t, policyConns, 5*time.Second), policyConns)

	got := legTimeWait(t, topo)
	t.Logf("TIME-WAIT: %s", got)
	requireAllRecordsOK(t, recs)
	claims := requireClaimsAgree(t, topo, recs, policyConns)
	if !got.near(tc.want, tc.slack, claims.reused) {
		t.Errorf("kernel TIME-WAIT:\n got  %s\n want %s (±%d, or %d fewer for the 4-tuples reused)", got, tc.want, tc.slack, claims.reused)
	}
	t.Logf("%s.reason %s; %s.first_fin %s", tc.leg, fmtCounts(countBy(recs, tc.leg+".reason")), tc.leg, fmtCounts(countBy(recs, tc.leg+".first_fin")))
	checkWanted(t, recs, tc)
	checkOrder(t, recs, tc)
	if tc.reason != "" {
		if n := countBy(recs, tc.leg+".reason")[tc.reason]; int(n) < len(recs)-tc.slack {
			t.Errorf("%s.reason %q on %v of %d records (±%d)", tc.leg, tc.reason, n, len(recs), tc.slack)
		}
	}
	return got
}

// newCountingTopology is newTopology for tests that count TIME-WAIT
// exactly. It turns on RFC 1337 protection (net.ipv4.tcp_rfc1337) in each
// host: without it, a late duplicate segment — a retransmitted FIN whose
// ACK was slow under CPU starvation — reaches a socket that already
// closed, its kernel answers with an RST, and that RST kills the peer's
// TIME-WAIT socket before its 60 s ("TIME-WAIT assassination"). The
// TIME-WAIT landed where the record says; it just did not last, and the
// counts would no longer show where it landed. (The proxy's own delayed
// ACK overtaken by its FIN was such a segment; the engine now sends that
// ACK early, and the demo, which runs with the host's default, checks it.)
func newCountingTopology(t testing.TB) *Topology {
	t.Helper()
	topo := newTopology(t)
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		topo.Sysctl(t, ns, "net.ipv4.tcp_rfc1337", "1")
	}
	return topo
}

// legTimeWait waits for the three hosts to settle and counts TIME-WAIT per
// host and leg.
func legTimeWait(t testing.TB, topo *Topology) twCounts {
	t.Helper()
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		waitTCPSettled(t, topo, ns, 10*time.Second)
	}
	c := twCounts{
		LB:         countTimeWait(t, topo, topo.LB, "dport = :8080"),
		ProxyFront: countTimeWait(t, topo, topo.Proxy, "sport = :8080"),
		ProxyBack:  countTimeWait(t, topo, topo.Proxy, "dport = :80"),
		Web:        countTimeWait(t, topo, topo.Web, "sport = :80"),
	}
	// Nothing else may hold TIME-WAIT: every socket belongs to a leg.
	if all := countTimeWait(t, topo, topo.LB, "") + countTimeWait(t, topo, topo.Proxy, "") +
		countTimeWait(t, topo, topo.Web, ""); all != c.LB+c.ProxyFront+c.ProxyBack+c.Web {
		t.Errorf("%d TIME-WAIT sockets in all, %d on the legs", all, c.LB+c.ProxyFront+c.ProxyBack+c.Web)
	}
	return c
}

// requireAllRecordsOK checks every record's outcome is ok.
func requireAllRecordsOK(t testing.TB, recs []Record) {
	t.Helper()
	bad := 0
	for _, r := range recs {
		if r.Str("outcome") != "ok" {
			if bad++; bad <= 3 {
				t.Errorf("record outcome %q (error %q), want ok: %v", r.Str("outcome"), r.Str("error"), r)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d records not ok", bad, len(recs))
	}
}

// checkWanted checks that the records name the configured targets.
func checkWanted(t testing.TB, recs []Record, tc policyCase) {
	t.Helper()
	front, back := or2(tc.front.TimeWait, "proxy"), or2(tc.back.TimeWait, "backend")
	for _, r := range recs {
		if r.Str("front.wanted") != front || r.Str("back.wanted") != back {
			t.Errorf("record wanted front %q back %q, want %q %q", r.Str("front.wanted"), r.Str("back.wanted"), front, back)
			return
		}
	}
}

func or2(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// checkOrder checks, on every record, that the leg under test ended in the
// order the case meant: peer-first when its peer's FIN reached the proxy
// before the other leg's (or the other leg's never came), proxy-first when
// the other leg's FIN came first. The FIN timestamps are since accept.
func checkOrder(t testing.TB, recs []Record, tc policyCase) {
	t.Helper()
	if tc.anyOrder {
		return
	}
	other := map[string]string{"front": "back", "back": "front"}[tc.leg]
	for _, r := range recs {
		mine, theirs := r.Num(tc.leg+".fin_in_ms"), r.Num(other+".fin_in_ms")
		peerFirst := mine >= 0 && (theirs < 0 || mine < theirs)
		proxyFirst := theirs >= 0 && (mine < 0 || theirs < mine)
		if (tc.peerFirst && !peerFirst) || (!tc.peerFirst && !proxyFirst) {
			t.Errorf("record %v: %s.fin_in_ms %v, %s.fin_in_ms %v: the %s leg did not end %s",
				r["id"], tc.leg, mine, other, theirs, tc.leg, map[bool]string{true: "peer-first", false: "proxy-first"}[tc.peerFirst])
			return
		}
	}
}

// tcpCounters returns the namespace's TCP counters that tell how
// connections ended, from /proc/net/snmp and /proc/net/netstat.
func tcpCounters(t testing.TB, topo *Topology, ns string) string {
	t.Helper()
	want := []string{
		"ActiveOpens", "PassiveOpens", "EstabResets", "OutRsts", "AttemptFails",
		"TW", "TWRecycled", "TWKilled", "TCPTimeWaitOverflow",
		"TCPAbortOnData", "TCPAbortOnClose", "TCPAbortOnMemory", "TCPAbortOnTimeout",
		"TCPAbortOnLinger", "TCPAbortFailed", "TCPRcvQDrop", "TCPZeroWindowDrop",
		"TCPChallengeACK", "TCPSYNChallenge", "PAWSEstab", "TCPACKSkippedTimeWait",
		"TCPACKSkippedFinWait2", "TCPDSACKIgnoredOld", "TCPTimeouts",
	}
	counters := tcpCounterValues(t, topo, ns)
	var b strings.Builder
	for _, k := range want {
		if v := counters[k]; v != 0 {
			fmt.Fprintf(&b, "%s=%d ", k, v)
		}
	}
	return b.String()
}

// tcpCounterValues is every Tcp and TcpExt counter of the namespace, from
// /proc/net/snmp and /proc/net/netstat, by name.
func tcpCounterValues(t testing.TB, topo *Topology, ns string) map[string]uint64 {
	t.Helper()
	counters := map[string]uint64{}
	for _, file := range []string{"/proc/net/snmp", "/proc/net/netstat"} {
		lines := strings.Split(topo.Exec(t, ns, "cat", file), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(keys) == 0 || (keys[0] != "Tcp:" && keys[0] != "TcpExt:") {
				continue
			}
			for j := 1; j < len(keys) && j < len(vals); j++ {
				if v, err := strconv.ParseUint(vals[j], 10, 64); err == nil {
					counters[keys[j]] = v
				}
			}
		}
	}
	return counters
}

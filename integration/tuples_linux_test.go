package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tuple names one TCP socket: its local and peer address, as ss prints
// them. A TIME-WAIT socket is identified by its 4-tuple on the host that
// holds it.
type tuple struct{ local, peer string }

// kernelTimeWait is every TIME-WAIT socket of the three hosts, by 4-tuple,
// once every host settled (nothing still opening or closing), and the
// 4-tuples of every other socket still open (live): a TIME-WAIT that a new
// connection on the same 4-tuple took over (RFC 6191) shows as live.
func kernelTimeWait(t testing.TB, topo *Topology) (held, live map[tuple]bool) {
	t.Helper()
	held, live = map[tuple]bool{}, map[tuple]bool{}
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		for _, s := range waitTCPSettled(t, topo, ns, 10*time.Second) {
			w := tuple{s.Local.String(), s.Peer.String()}
			if s.State == "TIME-WAIT" {
				held[w] = true
			} else {
				live[w], live[tuple{w.peer, w.local}] = true, true
			}
		}
	}
	return held, live
}

// legClaim is what a record says of one leg's TIME-WAIT sockets: those that
// must exist and those that must not. "unknown" claims that at least one
// of the two exists (anyOf).
type legClaim struct {
	must, mustNot, anyOf []tuple
}

// claimOf reads a record's claim for leg ("front" or "back"). The proxy's
// socket is local ↔ peer; the peer's is the reverse.
func claimOf(r Record, leg string) legClaim {
	local, peer := r.Str(leg+".local"), r.Str(leg+".peer")
	if local == "" || peer == "" {
		return legClaim{}
	}
	proxy, other := tuple{local, peer}, tuple{peer, local}
	switch r.Str(leg + ".time_wait") {
	case "proxy":
		return legClaim{must: []tuple{proxy}, mustNot: []tuple{other}}
	case "client", "backend":
		return legClaim{must: []tuple{other}, mustNot: []tuple{proxy}}
	case "both":
		return legClaim{must: []tuple{proxy, other}}
	case "unknown":
		return legClaim{anyOf: []tuple{proxy, other}}
	}
	return legClaim{mustNot: []tuple{proxy, other}}
}

// claimCheck is how records and the kernel compared.
type claimCheck struct {
	legs, agree, unknown int
	reused               int      // 4-tuples two records shared (only the later one is judged), or a connection without a record holds now
	wrong                []string // the first disagreements, worded
	unclaimed            []string // TIME-WAIT sockets on the legs no record claims
	placed               map[string]int
}

func (c claimCheck) String() string {
	keys := make([]string, 0, len(c.placed))
	for k := range c.placed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d, ", k, c.placed[k])
	}
	return fmt.Sprintf("%d/%d legs agree (%d unknown, %d 4-tuples reused); %s", c.agree, c.legs, c.unknown, c.reused, strings.TrimSuffix(b.String(), ", "))
}

// matchClaims judges every record's TIME-WAIT claims, leg by leg, against
// the kernel's TIME-WAIT sockets of topo, matched by 4-tuple. A 4-tuple
// that two records name (a port reused within the run) is judged for the
// later record only: the earlier socket's TIME-WAIT, if any, was taken
// over by the new connection.
func matchClaims(t testing.TB, topo *Topology, recs []Record) claimCheck {
	t.Helper()
	held, live := kernelTimeWait(t, topo)
	return judgeClaims(held, live, recs)
}

// judgeClaims is matchClaims against held, a snapshot of TIME-WAIT
// sockets by 4-tuple (kernelTimeWait, or scopeTimeWait for the
// connections of one part of a topology). A 4-tuple in live, in use by an
// open connection at the snapshot that no record names (a warm pool's,
// a kept-alive one), was taken over like one two records share: the
// claims on it are not judged, and counted as reused.
func judgeClaims(held, live map[tuple]bool, recs []Record) claimCheck {
	c := claimCheck{placed: map[string]int{}}
	last := lastNaming(recs, &c.reused)
	claimed := map[tuple]bool{}
	for i, r := range recs {
		for _, leg := range []string{"front", "back"} {
			l, p := r.Str(leg+".local"), r.Str(leg+".peer")
			if l == "" || p == "" || last[tuple{l, p}] != i {
				continue
			}
			if live[tuple{l, p}] && r.Str(leg+".close") != "pooled" {
				c.reused++
				continue
			}
			c.legs++
			c.placed[leg+" "+r.Str(leg+".time_wait")]++
			cl := claimOf(r, leg)
			if why := cl.judge(held, claimed); why != "" {
				if len(c.wrong) < 10 {
					c.wrong = append(c.wrong, fmt.Sprintf("record %v %s.time_wait %q (first_fin %q, close %q, reason %q): %s",
						r["id"], leg, r.Str(leg+".time_wait"), r.Str(leg+".first_fin"), r.Str(leg+".close"), r.Str(leg+".reason"), why))
				}
				continue
			}
			c.agree++
			if cl.anyOf != nil {
				c.unknown++
			}
		}
	}
	for w := range held {
		if !claimed[w] && len(c.unclaimed) < 10 {
			c.unclaimed = append(c.unclaimed, fmt.Sprintf("%s ↔ %s", w.local, w.peer))
		}
	}
	return c
}

// lastNaming returns, for each 4-tuple the records name, the index of the
// last record naming it, and counts in reused the names that came again.
// A front 4-tuple's last is the record with the highest id, not the last
// written: ids are taken at accept, and records are written by a
// goroutine each session starts as it ends, in no set order, so a client
// that reuses its port at once can have its new connection recorded
// first. Back 4-tuples go by the order written: a pooled connection
// serves sessions out of id order.
func lastNaming(recs []Record, reused *int) map[tuple]int {
	last := map[tuple]int{}
	for i, r := range recs {
		for _, leg := range []string{"front", "back"} {
			if l, p := r.Str(leg+".local"), r.Str(leg+".peer"); l != "" && p != "" {
				if prev, seen := last[tuple{l, p}]; seen {
					*reused++
					if leg == "front" && recs[prev].Num("id") > r.Num("id") {
						continue
					}
				}
				last[tuple{l, p}] = i
			}
		}
	}
	return last
}

// judge says why the claim disagrees with the kernel, or "" when it
// agrees, and marks the sockets it accounts for.
func (cl legClaim) judge(held, claimed map[tuple]bool) string {
	for _, w := range cl.must {
		if !held[w] {
			return fmt.Sprintf("the kernel holds no TIME-WAIT on %s ↔ %s", w.local, w.peer)
		}
	}
	for _, w := range cl.mustNot {
		if held[w] {
			return fmt.Sprintf("the kernel holds a TIME-WAIT on %s ↔ %s", w.local, w.peer)
		}
	}
	if cl.anyOf != nil && !held[cl.anyOf[0]] && !held[cl.anyOf[1]] {
		return "unknown, yet the kernel holds no TIME-WAIT on either side"
	}
	for _, w := range append(append([]tuple{}, cl.must...), cl.anyOf...) {
		claimed[w] = true
	}
	return ""
}

// requireClaimsAgree fails the test unless every leg of every record
// agrees with the kernel (requireAgreement); at most maxUnknown legs may
// say unknown.
func requireClaimsAgree(t testing.TB, topo *Topology, recs []Record, maxUnknown int) claimCheck {
	t.Helper()
	return requireAgreement(t, topo, recs, matchClaims(t, topo, recs), maxUnknown)
}

// requireAgreement fails the test unless c (the claims of recs judged)
// found every leg in agreement with the kernel, no TIME-WAIT socket
// unclaimed and at most maxUnknown legs unknown, and every reset recs
// claim left topo's proxy on its 4-tuple (requireResetsSent).
func requireAgreement(t testing.TB, topo *Topology, recs []Record, c claimCheck, maxUnknown int) claimCheck {
	t.Helper()
	requireResetsSent(t, topo, recs)
	t.Logf("records against the kernel: %s", c)
	for _, w := range c.wrong {
		t.Error(w)
	}
	if c.agree != c.legs {
		t.Errorf("%d of %d legs disagree with the kernel", c.legs-c.agree, c.legs)
	}
	for _, u := range c.unclaimed {
		t.Errorf("the kernel holds TIME-WAIT on %s, which no record claims", u)
	}
	if c.unknown > maxUnknown {
		t.Errorf("%d legs unknown, want at most %d", c.unknown, maxUnknown)
	}
	return c
}

// scopeTimeWait waits until no connection of a scope is opening or closing
// on any of the three hosts, then returns the scope's TIME-WAIT sockets by
// 4-tuple, and the 4-tuples of its open connections (both ways round). A
// scope is the connections one of whose ends is one of addrs (a
// listener's address for front legs, a backend's for back legs), so that
// other parts of the topology may stay busy meanwhile. Polling the kernel
// is the only way to see sockets settle; the deadline bounds it: busy
// then names the sockets still opening or closing, by host.
func scopeTimeWait(t testing.TB, topo *Topology, timeout time.Duration, addrs ...netip.AddrPort) (held, live map[tuple]bool, busy []string) {
	t.Helper()
	in := map[string]bool{}
	var ports []string
	for _, a := range addrs {
		in[a.String()] = true
		p := fmt.Sprintf(":%d", a.Port())
		ports = append(ports, "sport = "+p, "dport = "+p)
	}
	filter := "( " + strings.Join(ports, " or ") + " )"
	deadline := time.Now().Add(timeout)
	for {
		busy = nil
		held, live = map[tuple]bool{}, map[tuple]bool{}
		for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
			for _, s := range sockets(t, topo, ns, "all", filter) {
				l, p := s.Local.String(), s.Peer.String()
				switch {
				case !in[l] && !in[p]:
				case transient[s.State]:
					busy = append(busy, fmt.Sprintf("%s %s %s ↔ %s", ns, s.State, l, p))
				case s.State == "TIME-WAIT":
					held[tuple{l, p}] = true
				default:
					live[tuple{l, p}], live[tuple{p, l}] = true, true
				}
			}
		}
		if len(busy) == 0 || time.Now().After(deadline) {
			return held, live, busy
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settleOrExplain waits until no connection of the scope addrs is opening
// or closing and returns its TIME-WAIT and open sockets (scopeTimeWait);
// otherwise it fails naming the sockets still busy, the
// records that name them, and each host's counters of how connections
// ended (RSTs sent, refused as RFC 5961 challenge ACKs, aborts).
//
// One case is the network's, not the proxy's: a few client (or backend)
// sockets left in FIN-WAIT-2 whose connections the proxy ended with a
// reset (lostResets checks that the records say so and the proxy's kernel
// sent every reset they claim). An RST is sent once and never
// retransmitted; a lost one leaves the peer's orphan to its fin timeout,
// holding no TIME-WAIT.
// That is logged, with the host's backlog drops since dropsBefore and the
// stragglers' timers, not failed.
func settleOrExplain(t testing.TB, topo *Topology, recs []Record, dropsBefore uint64, addrs ...netip.AddrPort) (held, live map[tuple]bool) {
	t.Helper()
	held, live, busy := scopeTimeWait(t, topo, 15*time.Second, addrs...)
	if len(busy) == 0 {
		return held, live
	}
	var b strings.Builder
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		fmt.Fprintf(&b, "%s: %s\n", ns, tcpCounters(t, topo, ns))
	}
	why := lostResets(busy, topo.LB, topo.Web, recs, tcpCounterValues(t, topo, topo.Proxy), resetsSent(t, topo, topo.Proxy))
	if why == "" {
		t.Logf("%d peer sockets in FIN-WAIT-2 after the proxy's reset (host backlog drops since the load: %d): lost RSTs\n%s\n%s\n%s",
			len(busy), softnetDrops(t)-dropsBefore, namedBy(busy, recs), b.String(),
			topo.Exec(t, topo.LB, "ss", "-tanoe", "state", "fin-wait-2")+topo.Exec(t, topo.Web, "ss", "-tanoe", "state", "fin-wait-2"))
		return held, live
	}
	t.Fatalf("%d sockets still opening or closing 15 s after every record was written (not lost resets: %s):\n%s\n%s",
		len(busy), why, namedBy(busy, recs), b.String())
	return nil, nil
}

// lostResets says why the busy sockets ("ns STATE local ↔ peer") are not
// explained by resets the network lost, or "" when they are: every one is
// in FIN-WAIT-2, a client's on lb or a backend's on web, the latest
// record of its connection says the proxy ended that leg (front or back)
// with a reset it sent, an RST left the
// proxy's host on that very 4-tuple (sent, from resetsSent), the proxy's
// kernel (its counters proxy) sent at least as many resets as the records
// claim on both legs and failed none, and there are few (at most one per 500 records: a
// reset the proxy's kernel sends with a wrong sequence number would
// strand every connection, not a few).
func lostResets(busy []string, lb, web string, recs []Record, proxy map[string]uint64, sent map[tuple]bool) string {
	if limit := max(1, len(recs)/500); len(busy) > limit {
		return fmt.Sprintf("%d stragglers, more than %d", len(busy), limit)
	}
	latest := lastNaming(recs, new(int))
	for _, line := range busy {
		f := strings.Fields(line)
		leg := map[string]string{lb: "front", web: "back"}[f[0]]
		if len(f) != 5 || leg == "" || f[1] != "FIN-WAIT-2" {
			return line + " is not a client's or a backend's FIN-WAIT-2"
		}
		i, named := latest[tuple{f[4], f[2]}]
		if !named {
			return line + ": no record names it"
		}
		if last := recs[i]; last.Str(leg+".local") != f[4] || last.Str(leg+".close") != "reset" || last.Num(leg+".rst_out_ms") < 0 {
			return line + ": its record does not say the proxy reset it"
		}
		if !sent[tuple{f[4], f[2]}] {
			return line + ": no RST left the proxy's host on its 4-tuple"
		}
	}
	claimed := uint64(0)
	for _, r := range recs {
		for _, leg := range []string{"front", "back"} {
			if _, ok := r[leg+".rst_out_ms"]; ok && r.Num(leg+".rst_out_ms") >= 0 {
				claimed++
			}
		}
	}
	if proxy["OutRsts"] < claimed || proxy["TCPAbortFailed"] != 0 {
		return fmt.Sprintf("the proxy's kernel sent %d resets (%d failed), the records claim %d",
			proxy["OutRsts"], proxy["TCPAbortFailed"], claimed)
	}
	return ""
}

// softnetDrops is the packets the host's network backlog dropped since
// boot, all CPUs (/proc/net/softnet_stat, second column; one per host,
// every namespace's).
func softnetDrops(t testing.TB) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		t.Fatalf("softnet_stat: %v", err)
	}
	var n uint64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		d, err := strconv.ParseUint(f[1], 16, 64)
		if err != nil {
			t.Fatalf("softnet_stat %q: %v", line, err)
		}
		n += d
	}
	return n
}

// TestLostResets checks the one explanation settleOrExplain accepts for a
// socket that never settled, and that each of its conditions refuses.
func TestLostResets(t *testing.T) {
	rec := func(peer string, frontRst float64) Record {
		return Record{
			"front.peer": peer, "front.local": "10.0.1.2:8080", "front.close": "reset",
			"front.rst_out_ms": frontRst, "back.rst_out_ms": 28.0,
		}
	}
	recs := []Record{rec("10.0.1.1:50286", 28.0), rec("10.0.1.1:50287", 30.0)}
	for i := 0; i < 998; i++ {
		recs = append(recs, rec(fmt.Sprintf("10.0.1.1:%d", 51000+i), 20.0))
	}
	straggler := "lb FIN-WAIT-2 10.0.1.1:50286 ↔ 10.0.1.2:8080"
	sent := map[string]uint64{"OutRsts": 2000}
	onWire := map[tuple]bool{{"10.0.1.2:8080", "10.0.1.1:50286"}: true, {"10.0.1.2:8080", "10.0.1.1:50287"}: true}
	if why := lostResets([]string{straggler}, "lb", "web", recs, sent, onWire); why != "" {
		t.Fatalf("a client's FIN-WAIT-2 after a counted reset: %s, want explained", why)
	}
	// A backend's, after the proxy reset the back leg: the same proofs.
	backRec := Record{"front.peer": "10.0.1.1:52000", "front.local": "10.0.1.2:8080", "front.close": "fin", "front.rst_out_ms": -1.0,
		"back.local": "10.0.2.2:40000", "back.peer": "10.0.2.1:81", "back.close": "reset", "back.rst_out_ms": 12.0}
	backStraggler := "web FIN-WAIT-2 10.0.2.1:81 ↔ 10.0.2.2:40000"
	withBack := append(append([]Record{}, recs...), backRec)
	backWire := map[tuple]bool{{"10.0.2.2:40000", "10.0.2.1:81"}: true}
	if why := lostResets([]string{backStraggler}, "lb", "web", withBack, map[string]uint64{"OutRsts": 2001}, backWire); why != "" {
		t.Fatalf("a backend's FIN-WAIT-2 after a counted reset: %s, want explained", why)
	}
	backFIN := append(append([]Record{}, recs...), Record{"back.local": "10.0.2.2:40000", "back.peer": "10.0.2.1:81", "back.close": "fin", "back.rst_out_ms": -1.0})
	if why := lostResets([]string{backStraggler}, "lb", "web", backFIN, map[string]uint64{"OutRsts": 2001}, backWire); why == "" {
		t.Error("a backend's FIN-WAIT-2 whose record says FIN: explained as a lost reset, want refused")
	}
	reused := append([]Record{}, recs...)
	reused = append(reused, Record{"front.peer": "10.0.1.1:50286", "front.local": "10.0.1.2:8080", "front.close": "fin", "front.rst_out_ms": -1.0})
	for name, c := range map[string]struct {
		busy   []string
		recs   []Record
		proxy  map[string]uint64
		onWire map[tuple]bool
	}{
		"on the proxy":             {[]string{"proxy CLOSE-WAIT 10.0.1.2:8080 ↔ 10.0.1.1:50286"}, recs, sent, onWire},
		"client in FIN-WAIT-1":     {[]string{"lb FIN-WAIT-1 10.0.1.1:50286 ↔ 10.0.1.2:8080"}, recs, sent, onWire},
		"no record":                {[]string{"lb FIN-WAIT-2 10.0.1.1:40000 ↔ 10.0.1.2:8080"}, recs, sent, onWire},
		"latest record says FIN":   {[]string{straggler}, reused, sent, onWire},
		"no RST on its 4-tuple":    {[]string{straggler}, recs, sent, map[tuple]bool{{"10.0.1.2:8080", "10.0.1.1:50287"}: true}},
		"fewer resets than claims": {[]string{straggler}, recs, map[string]uint64{"OutRsts": 1999}, onWire},
		"a reset failed":           {[]string{straggler}, recs, map[string]uint64{"OutRsts": 2000, "TCPAbortFailed": 1}, onWire},
		"too many":                 {[]string{straggler, "lb FIN-WAIT-2 10.0.1.1:50287 ↔ 10.0.1.2:8080", straggler}, recs, sent, onWire},
	} {
		if why := lostResets(c.busy, "lb", "web", c.recs, c.proxy, c.onWire); why == "" {
			t.Errorf("%s: explained as lost resets, want refused", name)
		}
	}
}

// TestClaimsJudgedInAcceptOrder: a client reused its port for a connection
// the proxy ended with a FIN first, recorded before the record of the
// session that had the port before (a safe reset, whose record's
// goroutine ran later). The kernel's TIME-WAIT on that 4-tuple is the later
// connection's: judged by id, both checks agree with the kernel; judged by
// the order written, they would not.
func TestClaimsJudgedInAcceptOrder(t *testing.T) {
	front := tuple{"10.0.1.2:8080", "10.0.1.1:50286"}
	recs := []Record{
		{"id": 2.0, "front.local": front.local, "front.peer": front.peer, "front.time_wait": "proxy", "front.close": "fin", "front.rst_out_ms": -1.0},
		{"id": 1.0, "front.local": front.local, "front.peer": front.peer, "front.time_wait": "none", "front.close": "reset", "front.rst_out_ms": 3.0},
	}
	if c := judgeClaims(map[tuple]bool{front: true}, nil, recs); len(c.wrong) != 0 || c.agree != 1 || c.reused != 1 {
		t.Errorf("the later connection holds TIME-WAIT: %v %q, want 1/1 legs agree, 1 4-tuple reused", c, c.wrong)
	}
	if c := judgeClaims(map[tuple]bool{}, nil, recs); len(c.wrong) != 1 {
		t.Errorf("no TIME-WAIT on the 4-tuple the later connection claims: %v, want it wrong", c)
	}
	straggler := "lb FIN-WAIT-2 10.0.1.1:50286 ↔ 10.0.1.2:8080"
	if why := lostResets([]string{straggler}, "lb", "web", recs, map[string]uint64{"OutRsts": 1}, map[tuple]bool{front: true}); why == "" {
		t.Error("a straggler whose latest connection ended with a FIN: explained as a lost reset, want refused")
	}
}

// resetWatch is an nftables table that notes, by 4-tuple, every RST its
// host sends (set sent, the sender's address and port first): a record's
// claim that the proxy reset a connection is matched to an RST that left,
// not to a count of the host's.
const resetWatch = `table inet cptrst {
	set sent {
		type ipv4_addr . inet_service . ipv4_addr . inet_service
		flags dynamic
		size 262144
	}
	chain out {
		type filter hook output priority 0; policy accept;
		tcp flags & rst == rst add @sent { ip saddr . tcp sport . ip daddr . tcp dport }
	}
}
`

// watchResets starts noting the RSTs ns sends (resetWatch).
func watchResets(t testing.TB, topo *Topology, ns string) {
	t.Helper()
	needTool(t, "nft")
	nftRules(t, topo, ns, resetWatch)
}

// resetsSent is the 4-tuples, as tuple{local, peer} of the sender's
// socket, on which ns sent an RST since watchResets.
func resetsSent(t testing.TB, topo *Topology, ns string) map[tuple]bool {
	t.Helper()
	return nftTuples(t, topo, ns, "cptrst", "sent")
}

// nftTuples reads an nftables set of 4-tuples (address . port . address .
// port, as resetWatch and segmentLoss fill them) in ns, each as tuple{the
// sender's address and port, the receiver's}.
func nftTuples(t testing.TB, topo *Topology, ns, table, set string) map[tuple]bool {
	t.Helper()
	var out struct {
		Nftables []struct {
			Set *struct {
				Elem []struct {
					Concat []any `json:"concat"`
				} `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	raw := topo.Exec(t, ns, "nft", "-j", "list", "set", "inet", table, set)
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("nft set %s %s in %s: %v: %s", table, set, ns, err, raw)
	}
	got := map[tuple]bool{}
	for _, o := range out.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			if len(e.Concat) != 4 {
				t.Fatalf("nft set %s %s in %s: element %v, want address, port, address, port", table, set, ns, e.Concat)
			}
			got[tuple{fmt.Sprintf("%v:%v", e.Concat[0], e.Concat[1]), fmt.Sprintf("%v:%v", e.Concat[2], e.Concat[3])}] = true
		}
	}
	return got
}

// requireResetsSent checks that every reset a record says the proxy sent
// (<leg>.rst_out_ms) left topo's proxy on that leg's 4-tuple (resetsSent):
// a record's "reset" is an RST on the wire, connection by connection. A
// claimed reset not in the set yet is looked for again until
// resetWithin has passed (the set is the kernel's, polled: no event says
// when an element was added), then it fails.
func requireResetsSent(t testing.TB, topo *Topology, recs []Record) {
	t.Helper()
	type claim struct {
		r     Record
		leg   string
		local string
		peer  string
	}
	var claims []claim
	for _, r := range recs {
		for _, leg := range []string{"front", "back"} {
			if _, ok := r[leg+".rst_out_ms"]; !ok || r.Num(leg+".rst_out_ms") < 0 {
				continue
			}
			claims = append(claims, claim{r, leg, r.Str(leg + ".local"), r.Str(leg + ".peer")})
		}
	}
	deadline := time.Now().Add(resetWithin)
	var sent map[tuple]bool
	for len(claims) > 0 {
		sent = resetsSent(t, topo, topo.Proxy)
		missing := claims[:0]
		for _, c := range claims {
			if !sent[tuple{c.local, c.peer}] {
				missing = append(missing, c)
			}
		}
		claims = missing
		if len(claims) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(resetPoll) // polling the kernel's set, not a synchronisation
	}
	if len(claims) == 0 {
		return
	}
	// What tells a reset the kernel never sent (TCPAbortFailed, OutRsts
	// short of the set) from one the set did not note.
	kernel := fmt.Sprintf("the proxy's kernel: %s; the set holds %d 4-tuples", tcpCounters(t, topo, topo.Proxy), len(sent))
	for _, c := range claims {
		t.Errorf("record %v says the proxy reset its %s leg, but no RST left the proxy on %s ↔ %s within %v (%s)\n%s", c.r["id"], c.leg, c.local, c.peer, resetWithin, kernel, legs(c.r))
	}
}

// How long requireResetsSent looks for a claimed RST, and how often.
const (
	resetWithin = 2 * time.Second
	resetPoll   = 50 * time.Millisecond
)

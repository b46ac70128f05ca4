package integration

import (
	"fmt"
	"net/netip"
	"sort"
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
func lastNaming(recs []Record, reused *int) map[tuple]int {
	last := map[tuple]int{}
	for i, r := range recs {
		for _, leg := range []string{"front", "back"} {
			if l, p := r.Str(leg+".local"), r.Str(leg+".peer"); l != "" && p != "" {
				if _, seen := last[tuple{l, p}]; seen {
					*reused++
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
// agrees with the kernel and no TIME-WAIT socket of the run went
// unclaimed; at most maxUnknown legs may say unknown.
func requireClaimsAgree(t testing.TB, topo *Topology, recs []Record, maxUnknown int) claimCheck {
	t.Helper()
	return requireAgreement(t, matchClaims(t, topo, recs), maxUnknown)
}

// requireAgreement fails the test unless c found every leg in agreement
// with the kernel, no TIME-WAIT socket unclaimed and at most maxUnknown
// legs unknown.
func requireAgreement(t testing.TB, c claimCheck, maxUnknown int) claimCheck {
	t.Helper()
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
// or closing, and otherwise fails naming the sockets still busy, the
// records that name them, and each host's counters of how connections
// ended (RSTs sent, refused as RFC 5961 challenge ACKs, aborts).
func settleOrExplain(t testing.TB, topo *Topology, recs []Record, addrs ...netip.AddrPort) {
	t.Helper()
	_, _, busy := scopeTimeWait(t, topo, 15*time.Second, addrs...)
	if len(busy) == 0 {
		return
	}
	var b strings.Builder
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		fmt.Fprintf(&b, "%s: %s\n", ns, tcpCounters(t, topo, ns))
	}
	t.Fatalf("%d sockets still opening or closing 15 s after every record was written:\n%s\n%s",
		len(busy), namedBy(busy, recs), b.String())
}

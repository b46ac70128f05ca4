package doctor

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/closeproxy/closeproxy/sockdiag"
)

func TestGroupTimeWait(t *testing.T) {
	socks := []sockdiag.Socket{
		sock(stateListen, "0.0.0.0:80", "0.0.0.0:0"),
		sock(stateListen, "127.0.0.1:9901", "0.0.0.0:0"),
		sock(sockdiag.TimeWait, "10.0.0.1:80", "10.0.0.9:50000"),         // accepted on a wildcard listener
		sock(sockdiag.TimeWait, "127.0.0.1:9901", "127.0.0.1:50001"),     // accepted on a loopback listener
		sock(sockdiag.TimeWait, "10.0.0.1:9901", "10.0.0.2:443"),         // port 9901 listened on another address: dialed
		sock(sockdiag.TimeWait, "10.0.0.1:40000", "10.0.0.2:443"),        // dialed
		sock(sockdiag.TimeWait, "10.0.0.1:40001", "10.0.0.3:443"),        // dialed
		sock(sockdiag.FinWait2, "10.0.0.1:40002", "10.0.0.2:443"),        // orphaned FIN-WAIT-2: not TIME-WAIT
		sock(sockdiag.TimeWait, "[2001:db8::1]:80", "[2001:db8::9]:443"), // accepted (wildcard listener's port)
		sock(sockdiag.TimeWait, "10.0.0.1:8443", "10.0.0.9:50002"),       // no listener now, not an ephemeral port: accepted (a listener that closed)
		sock(sockdiag.TimeWait, "10.0.0.1:40003", "10.0.0.9:8443"),       // no listener, an ephemeral port: dialed
	}
	tw := groupTimeWait(socks, 100, 1, 32768, 60999)
	if tw.Total != 8 || tw.Accepting != 4 || tw.Dialing != 4 || tw.FinWait2 != 1 || tw.Destinations != 3 {
		t.Fatalf("total %d accepting %d dialing %d fin-wait-2 %d destinations %d; want 8 4 4 1 3",
			tw.Total, tw.Accepting, tw.Dialing, tw.FinWait2, tw.Destinations)
	}
	if len(tw.ByListenPort) != 1 || tw.ByListenPort[0] != (PortCount{Port: 80, Count: 2}) {
		t.Errorf("by listening port (top 1): %+v, want :80 2", tw.ByListenPort)
	}
	if len(tw.TopDestinations) != 1 || tw.TopDestinations[0].Addr.String() != "10.0.0.2:443" ||
		tw.TopDestinations[0].Count != 2 || tw.TopDestinations[0].Share != 0.02 {
		t.Errorf("top destination: %+v, want 10.0.0.2:443 2 (share 0.02)", tw.TopDestinations)
	}
}

func TestCollectRefusesNegativeRate(t *testing.T) {
	if _, err := Collect(Options{Rate: -1, src: quietHost().source()}); err == nil {
		t.Error("Collect with rate -1: no error")
	}
}

// A host that cannot list sockets still reports its settings, and says
// what it could not read.
func TestCollectWithoutSockDiag(t *testing.T) {
	h := quietHost()
	h.sockErr = errors.New("netlink: protocol not supported")
	rep, err := Collect(Options{src: h.source()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.TimeWait.Error == "" || len(rep.Unread) != 1 || len(rep.Settings) != 9 {
		t.Errorf("time_wait error %q, unread %q, %d settings; want an error, one unread, 9 settings",
			rep.TimeWait.Error, rep.Unread, len(rep.Settings))
	}
}

// tcp_tw_reuse = 2 covers loopback: a dialer short of ports toward a
// backend on loopback is not told to set 1, one toward another host is.
func TestTWReuseAdviceKnowsLoopback(t *testing.T) {
	for dest, want := range map[string]bool{"127.0.0.1:8081": false, "10.0.0.2:8081": true} {
		rep := &Report{TimeWait: TimeWait{UsablePorts: 100, TopDestinations: []Destination{
			{Addr: netip.MustParseAddrPort(dest), Count: 90, Share: 0.9}}}}
		_, recs := advise(rep, &kernel{twReuse: figure{v: 2, ok: true}})
		got := false
		for _, r := range recs {
			got = got || strings.Contains(r.Line, "tcp_tw_reuse=1")
		}
		if got != want {
			t.Errorf("tcp_tw_reuse = 2, pressure toward %s: recommends 1 %v, want %v (%+v)", dest, got, want, recs)
		}
	}
}

// Where connect() reuses TIME-WAIT ports (tcp_tw_reuse = 2 toward
// loopback, timestamps on), TIME-WAIT toward a destination is no sign of
// EADDRNOTAVAIL: no destination_ports warning for loopback, one still for
// another host; with timestamps off, for both.
func TestDestinationPortsWarningKnowsReuse(t *testing.T) {
	for _, tc := range []struct {
		dest       string
		timestamps int
		want       bool
	}{{"127.0.0.1:8081", 1, false}, {"10.0.0.2:8081", 1, true}, {"127.0.0.1:8081", 0, true}} {
		rep := &Report{TimeWait: TimeWait{UsablePorts: 100, TopDestinations: []Destination{
			{Addr: netip.MustParseAddrPort(tc.dest), Count: 90, Share: 0.9}}}}
		warns, _ := advise(rep, &kernel{twReuse: figure{v: 2, ok: true}, timestamps: figure{v: tc.timestamps, ok: true}})
		got := false
		for _, w := range warns {
			got = got || w.Kind == "destination_ports"
		}
		if got != tc.want {
			t.Errorf("tcp_tw_reuse = 2, timestamps %d, 90 %% of ports toward %s in TIME-WAIT: warned %v, want %v (%+v)", tc.timestamps, tc.dest, got, tc.want, warns)
		}
	}
}

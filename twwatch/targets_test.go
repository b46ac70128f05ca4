package twwatch

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// fakeResolver answers from a table and counts the lookups; a name not in
// the table does not resolve. It never touches the network.
type fakeResolver struct {
	names   map[string][]string
	lookups map[string]int
}

func (r *fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if r.lookups == nil {
		r.lookups = map[string]int{}
	}
	r.lookups[host]++
	ips, ok := r.names[host]
	if !ok {
		return nil, errors.New("no such host " + host)
	}
	var out []netip.Addr
	for _, ip := range ips {
		out = append(out, netip.MustParseAddr(ip))
	}
	return out, nil
}

func aps(ss ...string) []netip.AddrPort {
	out := []netip.AddrPort{}
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

func TestBuildTargets(t *testing.T) {
	res := &fakeResolver{names: map[string][]string{
		"app.internal": {"10.0.0.3", "::ffff:10.0.0.4"},
		"v6.internal":  {"2001:db8::7"},
	}}
	listen := func(addrs ...string) []config.Listener {
		var out []config.Listener
		for _, a := range addrs {
			out = append(out, config.Listener{Name: "l", Listen: a})
		}
		return out
	}
	backend := func(addrs ...string) []config.Backend {
		b := config.Backend{Name: "b"}
		for _, a := range addrs {
			b.Servers = append(b.Servers, config.Server{Address: a, Weight: 1})
		}
		return []config.Backend{b}
	}
	cases := []struct {
		name      string
		cfg       config.Config
		wantPorts []uint16
		wantBack  []netip.AddrPort
	}{
		{"listeners: every port, whatever the address", config.Config{Listeners: listen(":8080", "10.0.0.9:8443", "[::1]:9000")},
			[]uint16{8080, 8443, 9000}, aps()},
		{"listener on port 0 or unparsed: left out", config.Config{Listeners: listen("127.0.0.1:0", "no-port", ":http")},
			[]uint16{80}, aps()},
		{"backend written as one address", config.Config{Backends: []config.Backend{{Name: "b", Address: "10.0.0.2:80"}}},
			[]uint16{}, aps("10.0.0.2:80")},
		{"IPv4-mapped and zoned addresses as the kernel reports peers", config.Config{Backends: backend("[::ffff:10.0.0.2]:80", "[fe80::1%eth0]:81")},
			[]uint16{}, aps("10.0.0.2:80", "[fe80::1]:81")},
		{"host names resolved, every address", config.Config{Backends: backend("app.internal:8081", "v6.internal:443")},
			[]uint16{}, aps("10.0.0.3:8081", "10.0.0.4:8081", "[2001:db8::7]:443")},
		{"unresolved name and address without port: left out", config.Config{Backends: backend("gone.internal:80", "app-without-port", "10.0.0.2:80")},
			[]uint16{}, aps("10.0.0.2:80")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tg := BuildTargets(&tc.cfg, res, zaptest.NewLogger(t))
			if got := tg.FrontPorts(); !slices.Equal(got, tc.wantPorts) {
				t.Errorf("front ports %v, want %v", got, tc.wantPorts)
			}
			if got := tg.Backends(); !slices.Equal(got, tc.wantBack) {
				t.Errorf("backends %v, want %v", got, tc.wantBack)
			}
		})
	}
}

// A host name shared by several servers and backends is looked up once
// per configuration load, and again at the next load.
func TestBuildTargetsResolvesOncePerLoad(t *testing.T) {
	res := &fakeResolver{names: map[string][]string{"app.internal": {"10.0.0.3"}}}
	cfg := &config.Config{Backends: []config.Backend{
		{Name: "a", Servers: []config.Server{{Address: "app.internal:80"}, {Address: "app.internal:81"}}},
		{Name: "b", Address: "app.internal:80"},
		{Name: "c", Address: "gone.internal:80"},
		{Name: "d", Address: "gone.internal:81"},
	}}
	tg := BuildTargets(cfg, res, zaptest.NewLogger(t))
	if got := tg.Backends(); !slices.Equal(got, aps("10.0.0.3:80", "10.0.0.3:81")) {
		t.Errorf("backends %v", got)
	}
	if res.lookups["app.internal"] != 1 || res.lookups["gone.internal"] != 1 {
		t.Errorf("lookups %v, want one per name", res.lookups)
	}
	BuildTargets(cfg, res, zaptest.NewLogger(t))
	if res.lookups["app.internal"] != 2 {
		t.Errorf("lookups %v after a second load, want two of app.internal", res.lookups)
	}
}

func sock(st sockdiag.State, local, peer string) sockdiag.Socket {
	return sockdiag.Socket{State: st, Local: netip.MustParseAddrPort(local), Peer: netip.MustParseAddrPort(peer)}
}

// Counting by leg and by destination: only state TIME-WAIT, only the
// proxy's ends.
func TestCountByLegAndDestination(t *testing.T) {
	cfg := &config.Config{
		Listeners: []config.Listener{{Name: "web", Listen: ":8080"}},
		Backends:  []config.Backend{{Name: "app", Servers: []config.Server{{Address: "10.0.0.2:80"}, {Address: "10.0.0.3:80"}}}},
	}
	tg := BuildTargets(cfg, nil, zaptest.NewLogger(t))
	socks := []sockdiag.Socket{
		sock(sockdiag.TimeWait, "10.0.0.9:8080", "10.0.0.5:40000"), // front
		sock(sockdiag.FinWait2, "10.0.0.9:8080", "10.0.0.5:40001"), // orphaned FIN-WAIT-2: not TIME-WAIT
		sock(sockdiag.TimeWait, "10.0.0.5:40002", "10.0.0.9:8080"), // a client's, on this host
		sock(sockdiag.TimeWait, "10.0.0.9:50000", "10.0.0.2:80"),   // back, toward .2
		sock(sockdiag.TimeWait, "10.0.0.9:50001", "10.0.0.2:80"),   // back, toward .2
		sock(sockdiag.TimeWait, "10.0.0.2:80", "10.0.0.9:50003"),   // the backend's own
		sock(sockdiag.FinWait2, "10.0.0.9:50002", "10.0.0.2:80"),
		sock(sockdiag.TimeWait, "10.0.0.9:50004", "10.0.0.4:80"), // toward no backend
	}
	var s Sample
	tg.count(&s, socks)
	if s.Front != have(1) || s.Back != have(2) {
		t.Errorf("front %+v back %+v, want 1 and 2", s.Front, s.Back)
	}
	for dest, want := range map[string]int{"10.0.0.2:80": 2, "10.0.0.3:80": 0} {
		if n, ok := s.Toward(netip.MustParseAddrPort(dest)); !ok || n != want {
			t.Errorf("toward %s: %d, %v; want %d", dest, n, ok, want)
		}
	}
	if _, ok := s.Toward(netip.MustParseAddrPort("10.0.0.4:80")); ok {
		t.Error("toward 10.0.0.4:80, not a backend: reported")
	}
}

// A leg without targets is left unread, not reported as zero.
func TestCountLegWithoutTargets(t *testing.T) {
	cfg := &config.Config{Listeners: []config.Listener{{Name: "web", Listen: "127.0.0.1:0"}}}
	var s Sample
	BuildTargets(cfg, nil, zaptest.NewLogger(t)).count(&s, nil)
	if s.Front.OK || s.Back.OK || s.Destinations() != nil {
		t.Fatalf("front %+v back %+v, want both unread", s.Front, s.Back)
	}
}

package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/pool"
)

func TestCapEffHas(t *testing.T) {
	cases := []struct {
		name, status string
		want         bool
		err          bool
	}{
		{"root", "Name:\tx\nCapEff:\t000001ffffffffff\n", true, false},
		{"only net_bind_service", "CapEff:\t0000000000000400\n", false, false},
		{"only net_admin", "CapEff:\t0000000000001000\n", true, false},
		{"none", "CapEff:\t0000000000000000\n", false, false},
		{"garbled", "CapEff:\tzz\n", false, true},
		{"missing", "Name:\tx\n", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := capEffHas([]byte(tc.status), 12)
			if got != tc.want || (err != nil) != tc.err {
				t.Errorf("capEffHas = %v, %v; want %v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// transparentConfig has a tproxy listener and a source = "client" backend.
func transparentConfig() *config.Config {
	d := config.Defaults()
	ln, be := d.Listener, d.Backend
	ln.Name, ln.Listen, ln.Backend, ln.Intercept = "web", "127.0.0.1:0", "app", config.InterceptTProxy
	be.Name, be.Address, be.Source = "app", "127.0.0.1:1", config.SourceClient
	return &config.Config{Listeners: []config.Listener{ln}, Backends: []config.Backend{be}, Log: d.Log, Auto: d.Auto}
}

func TestNewRefusesTransparentWithoutNetAdmin(t *testing.T) {
	lacks := func(s *Server) { s.netAdmin = func() (bool, error) { return false, nil } }
	_, err := New(transparentConfig(), nil, lacks)
	want := `listener "web": intercept = "tproxy" needs CAP_NET_ADMIN (IP_TRANSPARENT); run as root or grant the capability` + "\n" +
		`backend "app": source = "client" needs CAP_NET_ADMIN (IP_TRANSPARENT); run as root or grant the capability`
	if err == nil || err.Error() != want {
		t.Fatalf("New without CAP_NET_ADMIN: %v\nwant: %s", err, want)
	}
	unknown := func(s *Server) { s.netAdmin = func() (bool, error) { return false, errors.New("no /proc") } }
	if _, err := New(transparentConfig(), nil, unknown); err == nil || !strings.Contains(err.Error(), "could not be checked: no /proc") {
		t.Fatalf("New when the capability cannot be read: %v", err)
	}
}

// An IPv6 client cannot be the source of a connection to an IPv4 backend:
// the session is refused with family_mismatch before any dial, and the
// pool does not blame the backend.
func TestSourceClientFamilyMismatch(t *testing.T) {
	dialed := make(chan struct{}, 1)
	addr := loopback.Serve(t, func(c *net.TCPConn) { dialed <- struct{}{}; c.Close() })
	be := defaultBackend(addr)
	be.Source = config.SourceClient
	has := func(s *Server) { s.netAdmin = func() (bool, error) { return true, nil } }
	h := startProxyWith(t, ppListener(config.ProxyProtocolRequired, "127.0.0.0/8"), be, []Option{has})

	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hdr := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("2001:db8::7"), Port: 4242},
		&net.TCPAddr{IP: net.ParseIP("2001:db8::80"), Port: 80})
	if _, err := hdr.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(c)
	td := h.record(t)
	if td.Outcome != engine.OutcomeFamilyMismatch || !strings.Contains(td.Err.Error(), "different address families") {
		t.Fatalf("record: outcome %s, error %v; want family_mismatch", td.Outcome, td.Err)
	}
	if td.Front.Close != policy.CloseReset || err == nil {
		t.Errorf("front.close %s, client read error %v: want the client reset", td.Front.Close, err)
	}
	if st := h.srv.PoolStats()["app"]; st.DialFailures != 0 || st.LocalDialFailures != 1 {
		t.Errorf("pool stats %+v: a family mismatch is ours, not the backend's", st)
	}
	select {
	case <-dialed:
		t.Error("the backend was dialed")
	default:
	}
}

func TestSameFamily(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1")
	for _, tc := range []struct {
		client  netip.Addr
		address string
		ok      bool
	}{
		{v4, "10.0.0.2:80", true},
		{v4, "[::ffff:10.0.0.2]:80", true},
		{v4, "[2001:db8::2]:80", false},
		{v6, "10.0.0.2:80", false},
		{v6, "[2001:db8::2]:80", true},
		{v4, "web.internal:80", true}, // left to the resolver
	} {
		if err := sameFamily(tc.client, tc.address); (err == nil) != tc.ok {
			t.Errorf("sameFamily(%s, %s) = %v, want ok %v", tc.client, tc.address, err, tc.ok)
		}
	}
}

// A client address that cannot be a connection's source (a PROXY header
// may name one) is refused before any dial, as this host's failure: the
// kernel dialed from the proxy's own address, and the backend logged the
// proxy as the client, silently.
func TestSourceDialerRefusesANonUnicastClient(t *testing.T) {
	for _, a := range []string{"0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "::ffff:0.0.0.0"} {
		ctx := pool.WithSource(context.Background(), netip.MustParseAddr(a))
		if d, err := sourceDialer(ctx, config.SourceClient, "10.0.0.2:80"); err == nil || !pool.IsLocal(err) {
			t.Errorf("client %s: dialer %v, error %v; want a local error, no dial", a, d, err)
		}
	}
	ctx := pool.WithSource(context.Background(), netip.MustParseAddr("192.0.2.7"))
	if _, err := sourceDialer(ctx, config.SourceClient, "10.0.0.2:80"); err != nil {
		t.Errorf("a unicast client: %v", err)
	}
}

// Reload checks the capability as New does, and a refused reload leaves
// the running configuration serving.
func TestReloadRefusesTransparentWithoutNetAdmin(t *testing.T) {
	addr := httpBackend(t, true)
	lacks := func(s *Server) { s.netAdmin = func() (bool, error) { return false, nil } }
	h := startProxyWith(t, ppListener(config.ProxyProtocolOff, "127.0.0.0/8"), defaultBackend(addr), []Option{lacks})
	next := transparentConfig()
	next.Listeners[0].Intercept = config.InterceptRedirect // needs nothing
	next.Backends[0].Address = addr
	err := h.srv.Reload(t.Context(), next)
	if err == nil || !strings.Contains(err.Error(), `backend "app": source = "client" needs CAP_NET_ADMIN`) ||
		strings.Contains(err.Error(), "intercept") {
		t.Fatalf("Reload without CAP_NET_ADMIN: %v", err)
	}
	if got, err := get(t, h.addr, false); got != response || err != nil {
		t.Errorf("after the refused reload: %q, %v; want the old configuration serving", got, err)
	}
	h.record(t)
}

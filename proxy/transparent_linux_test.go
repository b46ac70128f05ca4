package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/loopback"
)

// With source = "client", the backend sees the client the PROXY header
// named as its peer. On loopback every 127/8 address is local, so no
// policy routing is needed; IP_TRANSPARENT still needs CAP_NET_ADMIN.
func TestSourceClientDialsFromHeaderAddress(t *testing.T) {
	if ok, _ := hasNetAdmin(); !ok {
		t.Skip("needs CAP_NET_ADMIN for IP_TRANSPARENT (run as root, as CI does)")
	}
	peers := make(chan netip.AddrPort, 1)
	addr := loopback.Serve(t, func(c *net.TCPConn) {
		peers <- addrPort(c.RemoteAddr())
		io.WriteString(c, "hi")
		c.Close()
	})
	be := defaultBackend(addr)
	be.Source = config.SourceClient
	ln := ppListener(config.ProxyProtocolRequired, "127.0.0.0/8")
	ln.Intercept = config.InterceptTProxy // IP_TRANSPARENT on the listener; original_dst is its own address
	h := startProxy(t, ln, be)

	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := netip.MustParseAddrPort("127.0.0.55:4242")
	hdr := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client), c.RemoteAddr().(*net.TCPAddr))
	if _, err := hdr.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if string(got) != "hi" || err != nil {
		t.Fatalf("client read %q, %v", got, err)
	}
	c.Close()
	if peer := <-peers; peer.Addr() != client.Addr() {
		t.Errorf("backend saw %s, want the header's client %s", peer, client.Addr())
	}
	td := h.record(t)
	if td.Outcome != engine.OutcomeOK || td.Back.Local.Addr() != client.Addr() || td.Client != client {
		t.Errorf("record: outcome %s, back.local %s, client %s; want ok from %s", td.Outcome, td.Back.Local, td.Client, client.Addr())
	}
	if td.OriginalDst.String() != h.addr {
		t.Errorf("front.original_dst %s, want the listener's own %s (tproxy: the address the client dialed)", td.OriginalDst, h.addr)
	}
}

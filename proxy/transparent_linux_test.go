package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
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

// With source = "client" too, a backend that accepts, writes and resets
// at once is a connection made: every client gets the greeting, then the
// reset, and the record says backend_reset with the greeting's bytes,
// not dial_failed.
func TestSourceClientBackendThatSpeaksAndResetsAtOnce(t *testing.T) {
	if ok, _ := hasNetAdmin(); !ok {
		t.Skip("needs CAP_NET_ADMIN for IP_TRANSPARENT (run as root, as CI does)")
	}
	const greeting = "421 too busy, try later\r\n"
	addr := loopback.Serve(t, func(c *net.TCPConn) {
		io.WriteString(c, greeting)
		c.SetLinger(0)
		c.Close()
	})
	be := defaultBackend(addr)
	be.Source = config.SourceClient
	ln := ppListener(config.ProxyProtocolRequired, "127.0.0.0/8")
	ln.Intercept = config.InterceptTProxy
	h := startProxy(t, ln, be)
	client := netip.MustParseAddrPort("127.0.0.56:4242")
	var hdr bytes.Buffer
	if _, err := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(client),
		net.TCPAddrFromAddrPort(netip.MustParseAddrPort(h.addr))).WriteTo(&hdr); err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		got, err := greeted(h.addr, hdr.Bytes())
		if string(got) != greeting || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client %d of %d read %q, then %v; want the greeting, then ECONNRESET", i+1, n, got, err)
		}
		td := h.record(t)
		if td.Outcome != engine.OutcomeBackendReset || td.Back.BytesIn != int64(len(greeting)) || td.Back.Local.Addr() != client.Addr() {
			t.Errorf("client %d of %d: record %s (%v), back bytes_in %d from %s; want backend_reset, %d from %s",
				i+1, n, td.Outcome, td.Err, td.Back.BytesIn, td.Back.Local, len(greeting), client.Addr())
		}
		if t.Failed() {
			return
		}
	}
}

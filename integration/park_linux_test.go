package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// TestHTTP1ParkedKeepAliveThroughHAProxy: clients keep connections open
// through HAProxy (mode tcp, send-proxy-v2) to closeproxy in http1 mode
// (relay = "goroutines": sessions on the loops never park) in front of
// nginx, idle between two requests long enough for every session to park
// (closeproxy_http1_sessions_parked counts them all).
// Each second response arrives whole (SHA-256 of nginx's blob), each
// client then half-closes and reads EOF, and every record says ok, two
// requests, the client's own port from the PROXY header, the client's
// FIN first, and agrees with the kernel's TIME-WAIT sockets by 4-tuple.
func TestHTTP1ParkedKeepAliveThroughHAProxy(t *testing.T) {
	const (
		conns = 20
		size  = 64 << 10
	)
	topo := newTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{size}})
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfigWith(GlobalOpts{AdminListen: adminAddr, Relay: "goroutines"}, ListenerOpts{
		Name: "web", Listen: front, Backend: web.Addr.String(), Protocol: "http1",
		ProxyProtocol: "required", ProxyProtocolTrusted: []string{topo.LBAddr.String()},
		IdleTimeout: "30s",
	}))
	const lbAddr = "127.0.0.1:8443"
	startHAProxy(t, topo, topo.LB, lbAddr, front, "v2")
	want := web.BlobSHA256(t, size)

	type client struct {
		c  *net.TCPConn
		br *bufio.Reader
	}
	clients := make([]client, conns)
	get := func(i int) {
		t.Helper()
		cl := clients[i]
		if _, err := fmt.Fprintf(cl.c, "GET %s HTTP/1.1\r\nHost: web\r\n\r\n", web.BlobPath(size)); err != nil {
			t.Fatalf("client %d: send: %v", i, err)
		}
		resp, err := http.ReadResponse(cl.br, nil)
		if err != nil {
			t.Fatalf("client %d: response: %v", i, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		if err != nil || resp.StatusCode != 200 || hex.EncodeToString(h.Sum(nil)) != want {
			t.Fatalf("client %d: status %d, %d bytes (%v), SHA-256 %x; want 200 and nginx's %d-byte blob", i, resp.StatusCode, n, err, h.Sum(nil), size)
		}
	}
	for i := range clients {
		c, err := dialFrom(t, topo.LB, lbAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		clients[i] = client{c, bufio.NewReader(c)}
		get(i)
	}
	// Every session waits for its second request, parked: the gauge is
	// the only sign, so scrape until it counts them all.
	parked := 0.0
	for deadline := time.Now().Add(10 * time.Second); parked != conns; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("closeproxy_http1_sessions_parked %v after 10s, want %d", parked, conns)
		}
		parked, _ = scrape(t, topo.Proxy, adminAddr).Get("closeproxy_http1_sessions_parked")
	}
	ports := map[string]bool{}
	for i, cl := range clients {
		get(i)
		if err := cl.c.CloseWrite(); err != nil {
			t.Fatalf("client %d: half-close: %v", i, err)
		}
		if b, err := cl.br.ReadByte(); err != io.EOF {
			t.Fatalf("client %d: after its FIN read %q, %v; want EOF", i, b, err)
		}
		cl.c.Close()
		ports[strconv.Itoa(int(netip.MustParseAddrPort(cl.c.LocalAddr().String()).Port()))] = true
	}
	recs := cp.WaitRecords(t, conns, 10*time.Second)
	for _, r := range recs {
		port := checkClient(t, r, netip.MustParseAddr("127.0.0.1"), topo.LBAddr, "v2")
		if !ports[port] {
			t.Errorf("record client port %s is none of the clients'", port)
		}
		delete(ports, port)
		if r.Num("back.requests") != 2 || r.Str("front.first_fin") != "client" {
			t.Errorf("record: back.requests %v, front.first_fin %q; want 2, client", r.Num("back.requests"), r.Str("front.first_fin"))
		}
	}
	if len(ports) > 0 {
		t.Errorf("no record for client ports %v", ports)
	}
	if n, _ := scrape(t, topo.Proxy, adminAddr).Get("closeproxy_http1_sessions_parked"); n != 0 {
		t.Errorf("closeproxy_http1_sessions_parked %v after every session ended, want 0", n)
	}
	held, live, busy := scopeTimeWait(t, topo, 10*time.Second, netip.MustParseAddrPort(front))
	if len(busy) > 0 {
		t.Fatalf("front-leg sockets still closing after 10s: %v", busy)
	}
	requireAgreement(t, topo, recs, judgeClaims(held, live, recs), 0)
}

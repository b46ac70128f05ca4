package integration

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestGraceWaitsOutALostSegment: the back leg's grace (time_wait =
// "backend", fallback = "reset") bets that a backend silent after the
// client closed, having had the whole answer so far, is done. A backend
// whose next bytes are held up by a lost segment is not silent: the bytes
// after the hole wait in the proxy's kernel (out of order), unreadable
// until the segment comes again, at the earliest a retransmission timeout
// (200 ms) later, where the adaptive grace is tens of milliseconds. Seen
// in the lossy close matrix as a paused client cut short under a record
// that said ok. Here the backend answers 100 bytes, 3,000 and 100 at
// once; the large segment and its next two tries are dropped on arrival
// at the proxy (nftables, a byte quota), the small one after it is not.
// The client reads the first 100 bytes and closes: it must read every
// byte and a clean end, and the record say ok, nothing cut.
func TestGraceWaitsOutALostSegment(t *testing.T) {
	needTool(t, "nft")
	topo := newCountingTopology(t)
	const port = 9310
	req := blob(300)
	answer := blob(3200)
	first, held, after := answer[:100], answer[100:3100], answer[3100:]
	be := scriptBackend(t, topo.Web, addrPort(topo.WebAddr, port), func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		in := make([]byte, len(req))
		if _, err := io.ReadFull(c, in); err != nil {
			return
		}
		_, _ = c.Write(first)
		_, _ = c.Write(held)  // one segment of 3,000 bytes: dropped
		_, _ = c.Write(after) // 100 bytes: in, behind the hole
		_ = c.Close()
	})
	front := addrPort(topo.ProxyFront, 8310)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{Name: "hole", Listen: front, Backend: be,
		Pool: PoolOpts{Warm: "0"},
		Back: CloseOpts{TimeWait: "backend", Fallback: "reset", PeerFinGrace: "100ms"}}))
	nftRules(t, topo, topo.Proxy, fmt.Sprintf(`table inet closeproxy_hole {
	chain in {
		type filter hook prerouting priority 0;
		tcp sport %d meta length > 500 quota until 9000 bytes counter drop
	}
}
`, port))
	c, err := dialFrom(t, topo.LB, front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(first))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("the answer's start: %v", err)
	}
	// The client has what came and closes: the back leg's bet begins
	// once its FIN is in, while the rest waits behind the hole.
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != string(held)+string(after) {
		t.Errorf("after the hole the client read %d of %d bytes, %v; want all, then EOF", len(rest), len(held)+len(after), err)
	}
	if dropped := topo.Exec(t, topo.Proxy, "nft", "list", "table", "inet", "closeproxy_hole"); strings.Contains(dropped, "counter packets 0 ") {
		t.Errorf("nft dropped nothing: no hole was made\n%s", dropped)
	}
	recs := cp.WaitRecords(t, 1, 10*time.Second)
	requireOutcome(t, recs, "ok")
	if r := recs[0]; r.Num("front.bytes_out") != float64(len(answer)) {
		t.Errorf("record: front.bytes_out %v, want %d\n%s", r["front.bytes_out"], len(answer), legs(r))
	}
}

// TestRefusalSurvivesALostSegment: a request refused with a 400 while
// more of it is on its way (a body behind a bad head) leaves late bytes
// in the proxy, and the client must learn by a reset that they were
// lost. The 400 must reach it all the same: the reset waits until the
// client acknowledged it, for if it went at once a lost segment of the
// 400 would never be sent again. Here the 400's first try is dropped on
// arrival at the client (nftables, a byte quota); the client must read
// the whole 400, and the record say the front leg was not cut.
func TestRefusalSurvivesALostSegment(t *testing.T) {
	needTool(t, "nft")
	topo := newCountingTopology(t)
	be := scriptBackend(t, topo.Web, addrPort(topo.WebAddr, 9311), func(c *net.TCPConn) {
		_, _ = io.Copy(io.Discard, c) // never asked: the request is refused
	})
	front := addrPort(topo.ProxyFront, 8311)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{Name: "refuse", Listen: front, Backend: be,
		Protocol: "http1", Pool: PoolOpts{Warm: "0"}}))
	nftRules(t, topo, topo.LB, `table inet closeproxy_refusal {
	chain in {
		type filter hook prerouting priority 0;
		tcp sport 8311 meta length > 120 quota until 250 bytes counter drop
	}
}
`)
	c, err := dialFrom(t, topo.LB, front)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	// Content-Length with Transfer-Encoding is refused (request
	// smuggling); the body behind the head is the late data.
	req := "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4000\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat("x", 4000)
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if !strings.HasPrefix(string(got), "HTTP/1.1 400 ") || !strings.HasSuffix(string(got), "400 Bad Request\n") {
		t.Errorf("the client read %q, %v; want the whole 400", got, err)
	}
	if dropped := topo.Exec(t, topo.LB, "nft", "list", "table", "inet", "closeproxy_refusal"); strings.Contains(dropped, "counter packets 0 ") {
		t.Errorf("nft dropped nothing: no segment was lost\n%s", dropped)
	}
	recs := cp.WaitRecords(t, 1, 10*time.Second)
	requireOutcome(t, recs, "bad_request")
	if r := recs[0]; r.Str("front.close") != "reset" || r.Str("front.reason") != "late_data" || r["front.cut"] != false {
		t.Errorf("record: front leg %s, want reset for late_data, not cut\n%s", legs(r), legs(r))
	}
}

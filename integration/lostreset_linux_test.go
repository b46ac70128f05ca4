package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
)

// A reset the network loses is never sent again, so the client it was
// for keeps its socket in FIN-WAIT-2 until its FIN timeout: the one
// straggler the settle checks excuse, from the kernels' evidence alone
// (lostResets). Here the loss is real: nftables in the client's namespace
// drops the first reset to one client port, the load's clients and
// one curl (from that port) close first, and the proxy answers each with
// a safe reset (time_wait = "nowhere"). That client's socket is the only
// one left, and lostResets explains it; every body arrives whole.
func TestLostResetIsExplained(t *testing.T) {
	needTool(t, "nft")
	needTool(t, "curl")
	const (
		n        = 500 // lostResets excuses one straggler per 500 records
		size     = 1000
		lostPort = 40000 // the load's clients use 50000–50999
	)
	topo := newTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{size}})
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "web", Listen: front, Backend: web.Addr.String(),
		Front: CloseOpts{TimeWait: "nowhere"},
	}))
	// Lost on the way: dropped as it reaches the client's host (a drop on
	// the proxy's own output would fail the send, TCPAbortFailed).
	nftRules(t, topo, topo.LB, fmt.Sprintf(`table inet closeproxy_lost {
	chain in {
		type filter hook prerouting priority 0;
		tcp dport %d tcp flags & rst == rst limit rate 1/hour burst 1 packets counter drop
	}
}
`, lostPort))
	// The client's FIN is acknowledged at once, as it is when the proxy's
	// reset comes later than a delayed ACK: without it the client would
	// send its FIN again, and the reset that answers it would come through.
	for _, route := range strings.Split(strings.TrimSpace(topo.Exec(t, topo.Proxy, "ip", "route", "show", "match", topo.LBAddr.String())), "\n") {
		topo.Exec(t, topo.Proxy, append(append([]string{"ip", "route", "replace"}, strings.Fields(route)...), "quickack", "1")...)
	}
	topo.Sysctl(t, topo.LB, "net.ipv4.ip_local_port_range", "50000 50999")

	via := runLoad(t, topo, topo.LB, LoadOpts{
		Addr: front, N: n, C: 16, Path: web.BlobPath(size), Close: "client",
		ExpectBytes: size, SHA256: web.BlobSHA256(t, size), Timeout: 5 * time.Second, MaxDuration: 30 * time.Second,
	})
	if via.OK != n || via.ConnectErrors != 0 || via.OtherErrors != 0 {
		t.Fatalf("load: %d of %d completed, %d connect errors, %d other errors: %v", via.OK, n, via.ConnectErrors, via.OtherErrors, via.Errors)
	}
	body := topo.Exec(t, topo.LB, "curl", "-sS", "--max-time", "5", "--local-port", fmt.Sprint(lostPort), "http://"+front+web.BlobPath(size))
	if sum := sha256.Sum256([]byte(body)); hex.EncodeToString(sum[:]) != web.BlobSHA256(t, size) {
		t.Fatalf("curl from port %d: %d bytes, not the blob", lostPort, len(body))
	}
	recs := cp.WaitRecords(t, n+1, 15*time.Second)
	requireAllRecordsOK(t, recs)

	// The stranded socket stays for the client's FIN timeout (60 s): the
	// wait ends at its deadline with it still busy.
	_, _, busy := scopeTimeWait(t, topo, 3*time.Second, mustAddrPort(t, front), web.Addr)
	if len(busy) != 1 || !strings.Contains(busy[0], fmt.Sprintf("FIN-WAIT-2 %s:%d ", topo.LBAddr, lostPort)) {
		t.Fatalf("sockets still busy: %q; want only the client at port %d in FIN-WAIT-2 (its reset dropped)", busy, lostPort)
	}
	if dropped := topo.Exec(t, topo.LB, "nft", "list", "table", "inet", "closeproxy_lost"); !strings.Contains(dropped, "counter packets 1 ") {
		t.Errorf("nft dropped other than one reset:\n%s", dropped)
	}
	if why := lostResets(busy, topo.LB, topo.Web, recs, tcpCounterValues(t, topo, topo.Proxy), resetsSent(t, topo, topo.Proxy)); why != "" {
		t.Errorf("a reset the network lost is not explained: %s", why)
	}
}

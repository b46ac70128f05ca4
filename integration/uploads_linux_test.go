package integration

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestHTTP1UploadsThroughHAProxy: curl uploads bodies through HAProxy
// (mode tcp, send-proxy-v2) and closeproxy in http1 mode to nginx, which
// stores each PUT (WebDAV): with Content-Length, chunked (curl's own
// chunk sizes), and with Expect: 100-continue, 0 bytes to 5 MiB, several
// PUTs on one keep-alive connection. Each file nginx wrote has the
// SHA-256 of what curl sent, and a GET back through the same path
// returns it; every record says ok, v2, the client's own port, the
// requests counted, and agrees with the kernel's TIME-WAIT sockets by
// 4-tuple.
func TestHTTP1UploadsThroughHAProxy(t *testing.T) {
	needTool(t, "curl")
	topo := newTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true})
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "web", Listen: front, Backend: web.Addr.String(), Protocol: "http1",
		ProxyProtocol: "required", ProxyProtocolTrusted: []string{topo.LBAddr.String()},
		Back: CloseOpts{PeerFinGrace: "300ms"},
	}))
	const lbAddr = "127.0.0.1:8443"
	startHAProxy(t, topo, topo.LB, lbAddr, front, "v2")

	dir := t.TempDir()
	sizes := []int{0, 1000, 200000, 5 << 20}
	sums := map[string][32]byte{}
	modes := map[string][]string{
		"length":  {"-H", "Expect:"},
		"chunked": {"-H", "Expect:", "-H", "Transfer-Encoding: chunked"},
		"expect":  {"-H", "Expect: 100-continue"},
	}
	puts := 0
	for mode, flags := range modes {
		args := []string{"curl", "-sS", "--fail", "--max-time", "30", "-o", "/dev/null"}
		for _, n := range sizes {
			if n == 0 && mode == "chunked" {
				continue // curl (7.88) sends no last chunk for an empty file: nginx, too, would wait
			}
			puts++
			name := fmt.Sprintf("%s-%d", mode, n)
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(i*29 + i>>13 + n)
			}
			writeFile(t, filepath.Join(dir, name), b)
			sums[name] = sha256.Sum256(b)
			// One curl, one connection: each PUT after the first reuses it.
			args = append(args, flags...)
			args = append(args, "-T", filepath.Join(dir, name), "http://"+lbAddr+"/dav/"+name)
			if n != sizes[len(sizes)-1] {
				args = append(args, "--next", "-sS", "--fail", "--max-time", "30", "-o", "/dev/null")
			}
		}
		topo.Exec(t, topo.LB, args...)
	}
	for name, want := range sums {
		got, err := os.ReadFile(web.DAVFile(name))
		if err != nil || sha256.Sum256(got) != want {
			t.Errorf("%s: nginx stored %d bytes (%v), not what curl sent by SHA-256", name, len(got), err)
		}
		back := filepath.Join(dir, name+".back")
		topo.Exec(t, topo.LB, "curl", "-sS", "--fail", "--max-time", "30", "-o", back, "http://"+lbAddr+"/dav/"+name)
		if got, err := os.ReadFile(back); err != nil || sha256.Sum256(got) != want {
			t.Errorf("%s: GET back through HAProxy and closeproxy: %d bytes (%v), not the file by SHA-256", name, len(got), err)
		}
	}
	recs := cp.WaitRecords(t, len(modes)+len(sums), 10*time.Second)
	requests := map[float64]int{}
	for _, r := range recs {
		checkClient(t, r, netip.MustParseAddr("127.0.0.1"), topo.LBAddr, "v2")
		requests[r.Num("back.requests")]++
	}
	if requests[float64(len(sizes))]+requests[float64(len(sizes)-1)] != len(modes) || requests[1] != len(sums) || puts != len(sums) {
		t.Errorf("records by requests counted: %v, want %d for the uploads' %d PUTs and %d with 1 (the GETs)", requests, len(modes), puts, len(sums))
	}
	held, live, busy := scopeTimeWait(t, topo, 10*time.Second, netip.MustParseAddrPort(front))
	if len(busy) > 0 {
		t.Fatalf("front-leg sockets still closing after 10s: %v", busy)
	}
	requireAgreement(t, topo, recs, judgeClaims(held, live, recs), 0)
}

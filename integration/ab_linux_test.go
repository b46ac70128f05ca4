package integration

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestApacheBenchThroughCloseproxy: ApacheBench, a client nobody here
// wrote, speaks HTTP/1.0 without keep-alive and reads each response until
// the server closes. Through closeproxy in tcp mode nginx closes first and
// its FIN is passed on; in http1 mode the backend connection goes back to
// the pool (the proxy asks nginx for keep-alive on its behalf) and the
// proxy ends the front leg itself, as an HTTP/1.0 request that did not ask
// for keep-alive wants. Either way ab gets every response
// whole (its own length check, and the bytes it counts), nginx sent each
// whole, every record is ok and its TIME-WAIT claims are the kernel's, by
// 4-tuple. ab reads no body it could hash: nginx's access log and ab's
// byte count stand in for the streams' SHA-256 here (the close matrix
// hashes its streams at both ends).
func TestApacheBenchThroughCloseproxy(t *testing.T) {
	bin := needTool(t, "ab")
	const n, c, size = 400, 20, 20000
	for _, mode := range []string{"tcp", "http1"} {
		t.Run(mode, func(t *testing.T) {
			topo := newCountingTopology(t)
			web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{size}})
			front := addrPort(topo.ProxyFront, 8080)
			cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfigWith(GlobalOpts{}, ListenerOpts{
				Name: "web", Listen: front, Backend: web.Addr.String(), Protocol: mode,
			}))
			out := topo.Exec(t, topo.LB, bin, "-n", fmt.Sprint(n), "-c", fmt.Sprint(c), "-s", "10", "http://"+front+web.BlobPath(size))
			complete, failed, html := abFigure(t, out, "Complete requests"), abFigure(t, out, "Failed requests"), abFigure(t, out, "HTML transferred")
			if complete != n || failed != 0 || html != n*size || strings.Contains(out, "Non-2xx responses") {
				t.Errorf("ab: %d complete, %d failed, %d body bytes; want %d, 0, %d and every response 200\n%s", complete, failed, html, n, n*size, out)
			}
			request := "GET " + web.BlobPath(size) + " HTTP/1.0"
			served := web.WaitAccessLog(t, n, 10*time.Second)
			bad, conns := 0, map[int64]bool{}
			for _, a := range served {
				if a.Status != 200 || a.Request != request || a.BodyBytesSent != size {
					bad++
				}
				conns[a.Connection] = true
			}
			// http1 asks nginx for keep-alive on ab's behalf: the pool's
			// connections serve many requests each.
			if mode == "http1" && len(conns) > n/4 {
				t.Errorf("nginx saw %d connections for %d requests in http1 mode; want the pool's few", len(conns), n)
			}
			if len(served) != n || bad != 0 {
				t.Errorf("nginx served %d requests, %d of them not a whole 200 to %q (e.g. %+v); want %d", len(served), bad, request, served[0], n)
			}
			// ab also opens connections it then closes unused, once it has
			// its n answers: sessions without a request, ok as well. All
			// of them are judged, as many as the proxy accepted.
			total := settledAccepted(t, topo, "web", 20*time.Second)
			if total < n {
				t.Fatalf("closeproxy accepted %d connections; ab completed %d requests", total, n)
			}
			recs := cp.WaitRecords(t, total, 10*time.Second)
			requireAllRecordsOK(t, recs)
			requireClaimsAgree(t, topo, recs, n/10)
		})
	}
}

// abFigure is the integer ab printed after "name:" (the first number on
// that line); it fails t if ab printed no such line.
func abFigure(t testing.TB, out, name string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ab printed no %q line:\n%s", name, out)
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestHTTP1EarlyAnswerFromNginxKeepsTheConnection: nginx answers a
// location that reads no body at once, then reads the body and throws it
// away, keeping the connection. A keep-alive client POSTs 100 KB there and
// then GETs on the same connection, forty times: direct, every GET is
// answered. Through closeproxy (http1) each answer that does not say
// Connection: close must be followed by the GET's; one that says it (the
// answer came while the body was on its way) ends the connection. The
// proxy writes all of such a body before nginx's answer comes, nginx's
// kernel takes the last of it only once nginx reads on: before the proxy
// waited for that, it ended a third of these connections after the answer
// (13 of 40), under the client's next request.
func TestHTTP1EarlyAnswerFromNginxKeepsTheConnection(t *testing.T) {
	const (
		rounds = 40
		size   = 100_000
	)
	topo := newCountingTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true})
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "web", Listen: front, Backend: web.Addr.String(), Protocol: "http1",
		Pool: PoolOpts{Warm: "2", MaxConns: "8"},
	}))
	post := append([]byte(fmt.Sprintf("POST /early HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n\r\n", size)), make([]byte, size)...)
	told := 0 // answers that said Connection: close
	for i := range rounds {
		c, err := dialFrom(t, topo.LB, front)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(post); err != nil {
			t.Fatalf("%d: POST: %v", i, err)
		}
		br := bufio.NewReader(c)
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%d: answer to the POST: %v", i, err)
		}
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != 200 || string(b) != "early\n" {
			t.Fatalf("%d: answer %d %q, want 200 early", i, r.StatusCode, b)
		}
		if r.Close {
			told++
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("%d: after an answer that says close: %q, %v; want EOF", i, rest, err)
			}
			c.Close()
			continue
		}
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
			t.Errorf("%d: the next request: %v", i, err)
		} else if r, err := http.ReadResponse(br, nil); err != nil {
			t.Errorf("%d: the next request on the connection: %v (it ended under it)", i, err)
		} else if io.Copy(io.Discard, r.Body); r.StatusCode != 200 {
			t.Errorf("%d: the next request: %d, want 200", i, r.StatusCode)
		}
		c.Close()
	}
	recs := cp.WaitRecords(t, rounds, 20*time.Second)
	ok := 0
	for _, r := range recs {
		if r.Str("outcome") == "ok" {
			ok++
		}
	}
	t.Logf("%d of %d answers said Connection: close; records ok: %d", told, rounds, ok)
	between(t, "answers without Connection: close (the case under test)", rounds-told, 1, rounds)
	between(t, "records with outcome ok", ok, rounds, rounds)
}

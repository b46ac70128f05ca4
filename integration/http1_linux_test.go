package integration

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestHTTP1ReuseTenThousand is issue #4's headline for protocol "http1":
// 10,000 short client connections, one request each with Connection: close,
// share a handful of long-lived backend connections. nginx (keep-alive 60s,
// keepalive_requests 100000) sees no more connections than the pool's
// max_conns, every body arrives byte for byte, and the back leg leaves no
// more TIME-WAIT than max_conns on either end (in practice none: pooled
// connections are never closed during the run).
func TestHTTP1ReuseTenThousand(t *testing.T) {
	const (
		n        = 10000
		conc     = 48
		maxConns = 32
		warm     = 4
		size     = 16 << 10
	)
	topo := newCountingTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80),
		NginxOpts{Keepalive: true, KeepaliveTimeout: 60 * time.Second, BlobSizes: []int{size}})
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "web", Listen: front, Backend: web.Addr.String(), Protocol: "http1",
		Pool: PoolOpts{Warm: fmt.Sprint(warm), MaxConns: fmt.Sprint(maxConns)},
	}))

	r := runLoad(t, topo, topo.LB, LoadOpts{
		Addr: front, N: n, C: conc, Path: web.BlobPath(size), Connection: "close", Close: "server",
		ExpectBytes: size, SHA256: web.BlobSHA256(t, size), MaxDuration: 40 * time.Second,
	})
	requireAllOK(t, r, n)

	// Every response came from nginx, on at most max_conns connections.
	log := web.WaitAccessLog(t, n, 10*time.Second)
	conns := map[int64]int{}
	for _, e := range log {
		if e.Status != 200 || e.BodyBytesSent != size {
			t.Errorf("access log: %+v, want status 200 with %d bytes", e, size)
			break
		}
		conns[e.Connection]++
	}
	t.Logf("nginx: %d requests on %d distinct connections (max_conns %d, client concurrency %d); most on one: %d",
		len(log), len(conns), maxConns, conc, maxPerConn(conns))
	between(t, "nginx access log entries", len(log), n, n)
	between(t, "distinct nginx connections ($connection)", len(conns), 1, maxConns)

	recs := cp.WaitRecords(t, n, 20*time.Second)
	s := tallyBack(recs)
	t.Logf("records: %s", s)
	between(t, "records", len(recs), n, n)
	between(t, "records with outcome ok", s.outcome["ok"], n, n)
	between(t, "records with back.requests 1", s.requests[1], n, n)
	between(t, `records with back.close "pooled"`, s.close["pooled"], n, n)
	between(t, "records with back.reused true", s.reused, n*95/100, n)
	between(t, "records with back.pooled true", s.pooled, n*95/100, n)

	proxyBack, webTW := backLegTimeWait(t, topo)
	frontTally := map[string]int{}
	for _, r := range recs {
		frontTally[r.Str("front.close")+"/"+r.Str("front.time_wait")]++
	}
	t.Logf("TIME-WAIT: proxy back leg (dport :80) %d, web (sport :80) %d; front leg: proxy (sport :8080) %d, lb %d; records' front.close/time_wait %s",
		proxyBack, webTW, countTimeWait(t, topo, topo.Proxy, "sport = :8080"), countTimeWait(t, topo, topo.LB, ""), sortedCounts(frontTally))
	between(t, "proxy TIME-WAIT toward nginx (dport :80)", proxyBack, 0, maxConns)
	between(t, "web TIME-WAIT (sport :80)", webTW, 0, maxConns)
	if est := len(sockets(t, topo, topo.Proxy, "established", "dport = :80")); est > maxConns {
		t.Errorf("proxy holds %d established connections to nginx, want at most max_conns %d", est, maxConns)
	}
}

// TestHTTP1SmugglingRefused sends, from lb through closeproxy (http1) to
// nginx, requests that two HTTP parsers could frame differently. Each must
// be answered 400 by closeproxy with outcome bad_request, and nothing of it
// may reach nginx: its access log stays empty until a good request, sent
// last, shows up alone.
func TestHTTP1SmugglingRefused(t *testing.T) {
	topo := newCountingTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true})
	front := addrPort(topo.ProxyFront, 8080)
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfig(ListenerOpts{
		Name: "web", Listen: front, Backend: web.Addr.String(), Protocol: "http1",
		Pool: PoolOpts{Warm: "2", MaxConns: "8"},
	}))

	forwarded := 0 // requests of the corpus nginx logged (each already an error)
	for _, tc := range smugglingCorpus {
		t.Run(tc.name, func(t *testing.T) {
			before, logged := len(cp.Records()), len(web.AccessLog(t))
			c, err := dialFrom(t, topo.LB, front)
			if err != nil {
				t.Fatal(err)
			}
			local := c.LocalAddr().String()
			write(tc.raw)(t, c)
			got := readUntilClosed(t, c)
			rec := cp.WaitRecords(t, before+1, 10*time.Second)[before]
			var problems []string
			if !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
				problems = append(problems, fmt.Sprintf("client read %q, want a 400 from closeproxy", firstLine(got)))
			}
			if rec.Str("front.peer") != local || rec.Str("outcome") != "bad_request" {
				problems = append(problems, fmt.Sprintf("record: front.peer %q outcome %q error %q, want %s bad_request",
					rec.Str("front.peer"), rec.Str("outcome"), rec.Str("error"), local))
			}
			if rec.Num("back.requests") != 0 || rec.Num("back.bytes_out") != 0 {
				problems = append(problems, fmt.Sprintf("record: back.requests %v back.bytes_out %v back.close %q, want nothing sent to the backend",
					rec.Num("back.requests"), rec.Num("back.bytes_out"), rec.Str("back.close")))
			}
			// nginx logs a request once it answered it; a request that
			// reached it was answered (the client read that answer above)
			// before its record was written, so its line is there by now
			// or within moments: give it those moments.
			if len(problems) > 0 {
				time.Sleep(200 * time.Millisecond)
			}
			if log := web.AccessLog(t); len(log) != logged {
				forwarded += len(log) - logged
				problems = append(problems, fmt.Sprintf("nginx logged %+v, want nothing", log[logged:]))
			}
			if len(problems) > 0 {
				t.Error(strings.Join(problems, "\n"))
			}
		})
	}

	checkBackCloseWithoutBackend(t, cp.Records())

	// A good request, last: the log holds it alone, so none of the corpus
	// was merely late to arrive.
	c, err := dialFrom(t, topo.LB, front)
	if err != nil {
		t.Fatal(err)
	}
	write("GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")(t, c)
	if got := readUntilClosed(t, c); !bytes.HasPrefix(got, []byte("HTTP/1.1 200 OK")) || !bytes.HasSuffix(got, []byte("ok\n")) {
		t.Errorf("good request after the corpus got %q", got)
	}
	// nginx logs a request once it answered it, in the order it answered
	// them: the good request's line comes after every line of the corpus
	// nginx had answered before it.
	if log := web.WaitAccessLog(t, forwarded+1, 5*time.Second); len(log) != forwarded+1 || log[len(log)-1].Request != "GET / HTTP/1.1" {
		t.Errorf("nginx access log: %+v, want the good request after the %d forwarded", log, forwarded)
	}
	if cp.Exited() {
		t.Fatalf("closeproxy exited: %s", cp.Output())
	}
}

// smugglingCorpus: requests framed ambiguously (CL.TE, TE.CL, obfuscated
// Transfer-Encoding, differing Content-Length, chunk-size tricks) or with
// request-line and header tricks. Each carries a smuggled request after
// the ambiguity where the framing allows it.
var smugglingCorpus = []struct {
	name, raw string
	badBody   bool // the head is valid: the fault is in the chunked body
}{
	{"CL.TE", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 42\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n", false},
	{"TE.CL", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n25\r\nGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n\r\n0\r\n\r\n", false},
	{"TE with space before the colon", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", false},
	{"TE xchunked", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", false},
	{"TE chunked, identity", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", false},
	{"TE twice, second identity", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", false},
	{"TE obs-fold", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", false},
	{"TE vertical tab", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n", false},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
	{"CL twice, differing", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nContent-Length: 42\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n", false},
	{"CL list 5, 6", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 5, 6\r\n\r\nhello!", false},
	{"CL +5", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length: +5\r\n\r\nhello", false},
	{"CL tab before the colon", "POST / HTTP/1.1\r\nHost: web\r\nContent-Length\t: 5\r\n\r\nhello", false},
	{"chunk size 0x5", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", true},
	{"chunk size -5", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", true},
	{"chunk size overflow", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n", true},
	{"chunk size then space then extension", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n", true},
	{"chunk data longer than its size", "POST / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", true},
	{"request line double space", "GET  / HTTP/1.1\r\nHost: web\r\n\r\n", false},
	{"request line extra part", "GET / HTTP/1.1 GET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n", false},
	{"request line bare LF", "GET / HTTP/1.1\nHost: web\n\n", false},
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: web\r\n\r\n", false},
	{"target with a space", "GET /a b HTTP/1.1\r\nHost: web\r\n\r\n", false},
	{"missing Host", "GET / HTTP/1.1\r\n\r\n", false},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: web\r\nHost: other\r\n\r\n", false},
}

// backLegTimeWait waits for proxy and web to settle and counts the back
// leg's TIME-WAIT: in proxy toward port 80, in web from port 80.
func backLegTimeWait(t testing.TB, topo *Topology) (proxy, web int) {
	t.Helper()
	for _, ns := range []string{topo.Proxy, topo.Web} {
		waitTCPSettled(t, topo, ns, 10*time.Second)
	}
	return countTimeWait(t, topo, topo.Proxy, "dport = :80"), countTimeWait(t, topo, topo.Web, "sport = :80")
}

// backTally counts records by outcome and back-leg fields.
type backTally struct {
	outcome, close, reason map[string]int
	requests               map[int]int
	pooled, reused         int
}

func tallyBack(recs []Record) backTally {
	s := backTally{outcome: map[string]int{}, close: map[string]int{}, reason: map[string]int{}, requests: map[int]int{}}
	for _, r := range recs {
		s.outcome[r.Str("outcome")]++
		s.close[r.Str("back.close")]++
		s.reason[r.Str("back.reason")]++
		s.requests[int(r.Num("back.requests"))]++
		if r["back.pooled"] == true {
			s.pooled++
		}
		if r["back.reused"] == true {
			s.reused++
		}
	}
	return s
}

func (s backTally) String() string {
	return fmt.Sprintf("outcome %s; back.close %s; back.reason %s; back.requests %v; back.pooled %d; back.reused %d",
		sortedCounts(s.outcome), sortedCounts(s.close), sortedCounts(s.reason), s.requests, s.pooled, s.reused)
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%q:%d", k, m[k])
	}
	return "{" + b.String() + "}"
}

func maxPerConn(conns map[int64]int) int {
	m := 0
	for _, v := range conns {
		m = max(m, v)
	}
	return m
}

// firstLine is b up to its first CRLF.
func firstLine(b []byte) string {
	if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

package evloop

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// body is size bytes that differ from one size to the next.
func body(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + size)
	}
	return b
}

// h1Backend answers GET /N with N bytes (body(N)); /close/N also says
// Connection: close.
func h1Backend(t *testing.T) (netip.AddrPort, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/")
		if rest, ok := strings.CutPrefix(path, "close/"); ok {
			path = rest
			w.Header().Set("Connection", "close")
		}
		n, err := strconv.Atoi(path)
		if err != nil {
			http.Error(w, "bad size", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(body(n))
	}))
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://")), srv
}

// dialClient connects to a with every operation bounded by ioTimeout; for
// goroutines other than the test's.
func dialClient(a netip.AddrPort) (*net.TCPConn, error) {
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(a))
	if err == nil {
		c.SetDeadline(time.Now().Add(ioTimeout))
	}
	return c, err
}

// get sends GET path on c and reads the response's body.
func get(c *net.TCPConn, br *bufio.Reader, path string) (*http.Response, []byte, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: b\r\n\r\n", path); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return resp, got, err
}

// Keep-alive clients, each sending requests one after another over one
// connection, get every body whole (SHA-256), including bodies larger
// than the loop's buffers (the client's socket fills). A response after
// which the backend closes ends the client's connection too (as the
// proxy does), and the client connects again.
func TestHTTP1ExchangesOnTheLoop(t *testing.T) {
	be, _ := h1Backend(t)
	s := start(t, Config{Backend: be, Loops: 2, HTTP1: true})
	sizes := []int{0, 1, 300, 16 << 10, 100 << 10, 1 << 20}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for k := range 8 {
		wg.Go(func() {
			c, err := dialClient(s.Addr())
			if err != nil {
				errs <- err
				return
			}
			defer func() { c.Close() }()
			br := bufio.NewReader(c)
			for i := range 20 {
				size := sizes[(i+k)%len(sizes)]
				path, closing := "/"+strconv.Itoa(size), i%7 == 3
				if closing {
					path = "/close" + path // the backend ends its connection after this one
				}
				c.SetDeadline(time.Now().Add(ioTimeout)) // per request: a loaded host may take seconds for the connection's twenty
				resp, got, err := get(c, br, path)
				if err != nil {
					errs <- fmt.Errorf("client %d, request %d: %w", k, i, err)
					return
				}
				if sha256.Sum256(got) != sha256.Sum256(body(size)) || resp.Close != closing {
					errs <- fmt.Errorf("client %d, request %d (%s): %d bytes, %v, close %v; want %d bytes by SHA-256, close %v",
						k, i, path, len(got), err, resp.Close, size, closing)
					return
				}
				if closing {
					if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
						errs <- fmt.Errorf("client %d, request %d: read %d, %v after Connection: close; want EOF", k, i, n, err)
						return
					}
					c.Close()
					if c, err = dialClient(s.Addr()); err != nil {
						errs <- err
						return
					}
					br = bufio.NewReader(c)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A client that asks to close gets its answer with Connection: close,
// then the proxy's FIN; a request with a body, outside the prototype, is
// refused with 501 and the connection ends. The same with the readings
// true records take at each end (Config.Readings).
func TestHTTP1CloseAndRefusal(t *testing.T) {
	for _, readings := range []int{0, 7} {
		t.Run(fmt.Sprintf("readings %d", readings), func(t *testing.T) { closeAndRefusal(t, readings) })
	}
}

func closeAndRefusal(t *testing.T, readings int) {
	be, _ := h1Backend(t)
	s := start(t, Config{Backend: be, HTTP1: true, Readings: readings})
	for _, tc := range []struct {
		name, req, status, body string
	}{
		{"HTTP/1.0 without keep-alive", "GET /5 HTTP/1.0\r\n\r\n", "200", string(body(5))},
		{"Connection: close", "GET /5 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n", "200", string(body(5))},
		{"a body", "POST /5 HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nhi", "501", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := connect(t, s.Addr())
			io.WriteString(c, tc.req)
			all, err := io.ReadAll(c) // ends only with the proxy's FIN
			if err != nil {
				t.Fatalf("read %q, %v; want the answer, then EOF", all, err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(all))), nil)
			if err != nil {
				t.Fatalf("response %q: %v", all, err)
			}
			got, _ := io.ReadAll(resp.Body)
			if !strings.HasPrefix(resp.Status, tc.status) || string(got) != tc.body || !resp.Close {
				t.Fatalf("got %s, %q, close %v; want %s, %q, close", resp.Status, got, resp.Close, tc.status, tc.body)
			}
		})
	}
	waitSessions(t, s, 0)
}

// The backend closes the connections the loop keeps idle: each next
// request is still answered whole, on a connection dialed anew (the
// idle one's FIN closed it, or the reused one failed before its first
// byte and the request went again).
func TestHTTP1BackendClosesIdleConnections(t *testing.T) {
	be, srv := h1Backend(t)
	s := start(t, Config{Backend: be, Loops: 1, HTTP1: true})
	c := connect(t, s.Addr())
	br := bufio.NewReader(c)
	for i := range 20 {
		resp, got, err := get(c, br, "/300")
		if err != nil || resp.StatusCode != 200 || sha256.Sum256(got) != sha256.Sum256(body(300)) {
			t.Fatalf("request %d: %v, %d bytes; want 200 and the body", i, err, len(got))
		}
		srv.CloseClientConnections()
	}
}

// Two requests sent at once are answered in order on one connection; the
// second asks to close, so its answer ends the connection.
func TestHTTP1PipelinedRequests(t *testing.T) {
	be, _ := h1Backend(t)
	s := start(t, Config{Backend: be, HTTP1: true})
	c := connect(t, s.Addr())
	io.WriteString(c, "GET /5 HTTP/1.1\r\nHost: b\r\n\r\nGET /7 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read %q, %v; want two answers, then EOF", all, err)
	}
	br := bufio.NewReader(strings.NewReader(string(all)))
	for _, want := range []struct {
		size  int
		close bool
	}{{5, false}, {7, true}} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response of %d bytes: %v (all: %q)", want.size, err, all)
		}
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(got) != string(body(want.size)) || resp.Close != want.close {
			t.Fatalf("got %s, %d bytes, close %v; want 200, %d bytes, close %v", resp.Status, len(got), resp.Close, want.size, want.close)
		}
	}
	if rest, _ := io.ReadAll(br); len(rest) > 0 {
		t.Fatalf("%d bytes after the second answer: %q", len(rest), rest)
	}
}

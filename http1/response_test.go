package http1

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

func mustRequest(t testing.TB, head string) *Request {
	t.Helper()
	req, err := ReadRequest(bufio.NewReader(strings.NewReader(head)), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestResponseFraming(t *testing.T) {
	const get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, tc := range []struct {
		name, req, in string
		statuses      []int // one per response read, the last one carrying the body
		framing       Framing
		body          string
		close         bool
	}{
		{"HEAD with Content-Length has no body", "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", []int{200}, NoBody, "", false},
		{"HEAD with chunked has no body", "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", []int{200}, NoBody, "", false},
		{"100 then 200", get,
			"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", []int{100, 200}, Length, "ok", false},
		{"103 with fields then 200", get,
			"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", []int{103, 200}, Length, "", false},
		{"101 switching protocols", "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", []int{101}, NoBody, "", false},
		{"CONNECT 200 is a tunnel", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
			"HTTP/1.1 200 Connection Established\r\n\r\n", []int{200}, NoBody, "", false},
		{"204", get, "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", []int{204}, NoBody, "", false},
		{"304", get, "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n", []int{304}, NoBody, "", false},
		{"Content-Length", get, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", []int{200}, Length, "hello", false},
		{"chunked with trailers", get,
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;x=1\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n", []int{200},
			Chunked, "5;x=1\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n", false},
		{"gzip, chunked is chunked", get,
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", []int{200}, Chunked, "0\r\n\r\n", false},
		{"gzip alone is close-delimited", get,
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz", []int{200}, UntilClose, "zzz", true},
		{"close-delimited", get, "HTTP/1.1 200 OK\r\n\r\nall of it", []int{200}, UntilClose, "all of it", true},
		{"HTTP/1.0 with Content-Length closes", get, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", []int{200}, Length, "ok", true},
		{"HTTP/1.0 keep-alive", get, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", []int{200}, Length, "ok", false},
		{"HTTP/1.0 close-delimited", get, "HTTP/1.0 200 OK\r\n\r\nbye", []int{200}, UntilClose, "bye", true},
		{"Connection: close", get, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", []int{200}, Length, "ok", true},
		{"bare LF line endings tolerated", get, "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", []int{200}, Length, "ok", false},
		{"no reason phrase", get, "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", []int{200}, Length, "ok", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := mustRequest(t, tc.req)
			br := bufio.NewReader(strings.NewReader(tc.in))
			var resp *Response
			var heads bytes.Buffer
			for _, status := range tc.statuses {
				var err error
				if resp, err = ReadResponse(br, req, Limits{}); err != nil {
					t.Fatal(err)
				}
				if resp.Status != status {
					t.Fatalf("status %d, want %d", resp.Status, status)
				}
				heads.Write(resp.Raw)
			}
			var body bytes.Buffer
			if _, err := resp.CopyBody(&body, br); err != nil {
				t.Fatal(err)
			}
			if resp.Framing != tc.framing || body.String() != tc.body || resp.Close != tc.close {
				t.Fatalf("got framing %v body %q close %v", resp.Framing, body.String(), resp.Close)
			}
			if heads.String()+body.String() != tc.in {
				t.Fatalf("bytes changed: %q", heads.String()+body.String())
			}
		})
	}
}

func TestBadResponses(t *testing.T) {
	req := mustRequest(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	for name, in := range map[string]string{
		"Content-Length with Transfer-Encoding": "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"differing Content-Length":              "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"malformed Content-Length":              "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
		"Transfer-Encoding in HTTP/1.0":         "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/2.0":                              "HTTP/2.0 200 OK\r\n\r\n",
		"two-digit status":                      "HTTP/1.1 20 OK\r\n\r\n",
		"status followed by text":               "HTTP/1.1 200OK\r\n\r\n",
		"obs-fold":                              "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"bare CR":                               "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
		"space before colon":                    "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n",
		"not HTTP":                              "SSH-2.0-OpenSSH\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ReadResponse(bufio.NewReader(strings.NewReader(in)), req, Limits{})
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("got %v, want ErrBadResponse", err)
			}
		})
	}
	t.Run("malformed chunk wraps ErrBadResponse", func(t *testing.T) {
		br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"))
		resp, err := ReadResponse(br, req, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := resp.CopyBody(&bytes.Buffer{}, br); !errors.Is(err, ErrBadResponse) || errors.Is(err, ErrBadRequest) {
			t.Fatalf("got %v, want ErrBadResponse only", err)
		}
	})
}

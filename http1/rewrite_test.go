package http1

import (
	"bufio"
	"strings"
	"testing"
)

func TestHeadForBackend(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"HTTP/1.1 keep-alive unchanged",
			"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: a\r\n\r\n"},
		{"close line dropped",
			"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-B: c\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: a\r\nX-B: c\r\n\r\n"},
		{"close token removed, others kept",
			"GET / HTTP/1.1\r\nHost: a\r\nconnection: X-Foo,Close\r\nX-Foo: 1\r\n\r\n",
			"GET / HTTP/1.1\r\nHost: a\r\nconnection: X-Foo\r\nX-Foo: 1\r\n\r\n"},
		{"HTTP/1.0 gets keep-alive",
			"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
			"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"},
		{"HTTP/1.0 keep-alive unchanged",
			"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
			"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"},
		{"HTTP/1.0 close becomes keep-alive",
			"GET / HTTP/1.0\r\nConnection: close\r\n\r\n",
			"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := mustRequest(t, tc.in)
			if got := string(req.HeadForBackend()); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if string(req.Raw) != tc.in {
				t.Fatal("Raw modified")
			}
		})
	}
}

func TestHeadForClient(t *testing.T) {
	req := mustRequest(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, tc := range []struct {
		name, in string
		closing  bool
		want     string
	}{
		{"not closing: unchanged",
			"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false,
			"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"},
		{"closing: added",
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true,
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
		{"closing: keep-alive replaced",
			"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", true,
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
		{"closing: already close",
			"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", true,
			"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"},
		{"closing: bare LF head keeps its endings",
			"HTTP/1.1 200 OK\nConnection: keep-alive, x\nContent-Length: 0\n\n", true,
			"HTTP/1.1 200 OK\nConnection: x\nContent-Length: 0\nConnection: close\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := ReadResponse(bufio.NewReader(strings.NewReader(tc.in)), req, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(resp.HeadForClient(tc.closing)); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// readMessage reads one request and copies its body, as the proxy would.
func readMessage(t testing.TB, in string) (req *Request, body, rest string, err error) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(in))
	req, err = ReadRequest(br, Limits{})
	if err != nil {
		return nil, "", "", err
	}
	var out bytes.Buffer
	if _, err = CopyBody(&out, br, req.Framing, req.Length); err != nil {
		return req, "", "", err
	}
	var tail bytes.Buffer
	tail.ReadFrom(br)
	return req, out.String(), tail.String(), nil
}

// smuggling lists requests two parsers could frame differently; each must be
// refused with ErrBadRequest, head or body.
var smuggling = []struct{ name, in string }{
	{"CL.TE: Content-Length with Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"},
	{"TE.CL: Transfer-Encoding then Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"},
	{"TE.TE: space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"},
	{"TE.TE: tab before chunked, with Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"},
	{"TE.TE: vertical tab after chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n"},
	{"TE.TE: xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"},
	{"TE.TE: duplicate Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"TE.TE: duplicate, one identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"},
	{"TE.TE: chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"},
	{"TE.TE: gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
	{"TE.TE: chunked with inner space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun ked\r\n\r\n0\r\n\r\n"},
	{"TE.TE: quoted chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n"},
	{"TE.TE: empty Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n"},
	{"TE.TE: obs-fold into Transfer-Encoding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"CL.CL: different values", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
	{"CL.CL: same value, different spelling", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\nhello"},
	{"CL list 5, 5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello"},
	{"CL list 5, 6", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!"},
	{"CL +5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"},
	{"CL -1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"},
	{"CL 0x5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello"},
	{"CL inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 0\r\n\r\nhelloworld"},
	{"CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"},
	{"CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n"},
	{"CL underscore", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1_0\r\n\r\n"},
	{"chunk size then space then ext", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 ;ext\r\nhello\r\n0\r\n\r\n"},
	{"chunk ext with space after semicolon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5; ext\r\nhello\r\n0\r\n\r\n"},
	{"chunk ext without name", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;\r\nhello\r\n0\r\n\r\n"},
	{"chunk ext unterminated quote", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\n"},
	{"chunk size 0x5", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"},
	{"chunk size -5", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"},
	{"chunk size +5", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n"},
	{"chunk size overflow 18 digits", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n"},
	{"chunk size overflow 16 digits", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nhello\r\n0\r\n\r\n"},
	{"chunk size 17 digits with leading zeros", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n"},
	{"chunk size leading spaces", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n  5\r\nhello\r\n0\r\n\r\n"},
	{"chunk size trailing space", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"},
	{"chunk size empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n"},
	{"missing CRLF after chunk data", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"},
	{"LF only after chunk data", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n"},
	{"bare LF after chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"},
	{"bare LF after last chunk", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n"},
	{"bare LF ends trailers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n"},
	{"bare CR in chunk ext", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n"},
	{"trailer obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n"},
	{"trailer without colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET / HTTP/1.1\r\n\r\n"},
	{"request line double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"request line extra part", "GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n"},
	{"request line two parts", "GET /\r\nHost: a\r\n\r\n"},
	{"request line trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n"},
	{"request line tab", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n"},
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n"},
	{"HTTP/0.9 style", "GET /\r\n\r\n"},
	{"target with space", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"target with control", "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"target with DEL", "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"target bad escape", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"lowercase http/1.1", "GET / http/1.1\r\nHost: a\r\n\r\n"},
	{"method with invalid char", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"},
	{"obs-fold with tab", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n"},
	{"bare CR in field value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n"},
	{"bare CR in request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"bare CR as line ending", "GET / HTTP/1.1\rHost: a\r\n\r\n"},
	{"bare LF line endings", "GET / HTTP/1.1\nHost: a\n\n"},
	{"bare LF ends head", "GET / HTTP/1.1\r\nHost: a\r\n\n"},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"},
	{"space in field name", "GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n"},
	{"tab before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\nhello"},
	{"empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"},
	{"field without colon", "GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n"},
	{"missing Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n"},
	{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
	{"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"},
	{"two leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"leading bare LF", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"asterisk with GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"authority-form with GET", "GET a:80 HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"CONNECT without port", "CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"absolute-form without host", "GET http:/a HTTP/1.1\r\nHost: a\r\n\r\n"},
	{"head too large", "GET / HTTP/1.1\r\nHost: a\r\nX-A: " + strings.Repeat("a", 70<<10) + "\r\n\r\n"},
	{"too many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-A: b\r\n", 100) + "\r\n"},
}

// A refused body accounts for every byte its copy took from the reader:
// written, or told by Untaken (the refused line), so that a caller
// counting what it received from the client counts them all.
func TestRefusedBodyTellsWhatItTook(t *testing.T) {
	bodies := 0
	for _, tc := range smuggling {
		br := bufio.NewReader(strings.NewReader(tc.in))
		req, err := ReadRequest(br, Limits{})
		if err != nil {
			continue // refused at its head: no body was read
		}
		bodies++
		before := br.Buffered()
		var out bytes.Buffer
		n, err := CopyBody(&out, br, req.Framing, req.Length)
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", tc.name, err)
			continue
		}
		if took := int64(before - br.Buffered()); n+Untaken(err) != took || n != int64(out.Len()) {
			t.Errorf("%s: took %d bytes from the reader, wrote %d (counted %d), told %d untaken; want written + untaken = taken",
				tc.name, took, out.Len(), n, Untaken(err))
		}
	}
	if bodies == 0 {
		t.Fatal("no case refused in its body")
	}
	if _, err := CopyBody(io.Discard, bufio.NewReader(strings.NewReader("5\r\nhel")), Chunked, 0); Untaken(err) != 0 || err == nil {
		t.Errorf("a body cut short: %v, Untaken %d; want an error, 0", err, Untaken(err))
	}
}

func TestSmugglingRefused(t *testing.T) {
	for _, tc := range smuggling {
		t.Run(tc.name, func(t *testing.T) {
			req, body, _, err := readMessage(t, tc.in)
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("got %v (req %+v, body %q), want ErrBadRequest", err, req, body)
			}
		})
	}
}

func TestGoodRequests(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		framing  Framing
		body     string
		close    bool
		upgrade  bool
	}{
		{"GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", NoBody, "", false, false},
		{"GET with query and escapes", "GET /a%20b?q=100%&x HTTP/1.1\r\nHost: a\r\n\r\n", NoBody, "", false, false},
		{"one leading empty line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", NoBody, "", false, false},
		{"Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", Length, "hello", false, false},
		{"Content-Length leading zeros", "POST / HTTP/1.1\r\nHost: a\r\ncontent-length:  005 \r\n\r\nhello", Length, "hello", false, false},
		{"identical duplicate Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", Length, "hello", false, false},
		{"Content-Length 0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", Length, "", false, false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Chunked, "5\r\nhello\r\n0\r\n\r\n", false, false},
		{"chunked uppercase, extensions, trailers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\nA;a=b;c=\"d \\\" e\";f\r\n0123456789\r\n0;z\r\nX-T: 1\r\n\r\n", Chunked, "A;a=b;c=\"d \\\" e\";f\r\n0123456789\r\n0;z\r\nX-T: 1\r\n\r\n", false, false},
		{"tab before chunked is OWS", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\t\r\n\r\n0\r\n\r\n", Chunked, "0\r\n\r\n", false, false},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", NoBody, "", true, false},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", NoBody, "", false, false},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n", NoBody, "", true, false},
		{"absolute-form", "GET http://a.example:8080/x?y HTTP/1.1\r\nHost: a\r\n\r\n", NoBody, "", false, false},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", NoBody, "", false, false},
		{"CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", NoBody, "", false, true},
		{"websocket upgrade", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", NoBody, "", false, true},
		{"Upgrade not in Connection", "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", NoBody, "", false, false},
		{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", NoBody, "", false, false},
		{"obs-text in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n", NoBody, "", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, body, rest, err := readMessage(t, tc.in+"NEXT")
			if err != nil {
				t.Fatal(err)
			}
			if req.Framing != tc.framing || body != tc.body || rest != "NEXT" ||
				req.Close != tc.close || req.Upgrade != tc.upgrade {
				t.Fatalf("got framing %v body %q rest %q close %v upgrade %v", req.Framing, body, rest, req.Close, req.Upgrade)
			}
			if want := strings.TrimPrefix(tc.in, "\r\n"); !strings.HasPrefix(want, string(req.Raw)) ||
				len(want)-len(req.Raw) != len(body) {
				t.Fatalf("Raw %q is not the head of %q", req.Raw, tc.in)
			}
		})
	}
}

package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"reflect"
	"strings"
	"testing"
)

func addSeeds(f *testing.F) {
	for _, tc := range smuggling {
		f.Add([]byte(tc.in))
	}
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("\r\nPOST /x?y HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"b\"\r\nabc\r\n0\r\nX: y\r\n\r\nNEXT"))
	f.Add([]byte("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"))
	f.Add([]byte("GET http://a.example/x HTTP/1.0\r\n\r\n"))
}

// FuzzReadRequest checks, for every request we accept, that net/http accepts
// it too and agrees on method, target, the body's bytes and where the
// message ends. net/http may accept more than we do, never less.
func FuzzReadRequest(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		sameInPlace(t, data)
		req, body, rest, err := readFrom(data, 4096)
		req2, body2, rest2, err2 := readFrom(data, 16)
		if (err == nil) != (err2 == nil) || err == nil &&
			(!bytes.Equal(req.Raw, req2.Raw) || body != body2 || rest != rest2) {
			t.Fatalf("buffer size changes the outcome: %v / %v", err, err2)
		}
		if err != nil {
			return
		}
		skip := len(data) - len(rest) - len(req.Raw) - len(body)
		if skip != 0 && (skip != 2 || string(data[:2]) != "\r\n") ||
			string(data[skip:len(data)-len(rest)]) != string(req.Raw)+body {
			t.Fatalf("bytes changed or lost: skip %d, Raw %q, body %q", skip, req.Raw, body)
		}
		// Big enough for any trailer section, which net/http must see whole.
		hbr := bufio.NewReaderSize(bytes.NewReader(data[skip:]), len(data)+4096)
		hreq, err := http.ReadRequest(hbr)
		if err != nil {
			t.Fatalf("net/http refuses what we accept: %v", err)
		}
		if hreq.Method != req.Method || hreq.RequestURI != req.Target {
			t.Fatalf("net/http reads %q %q, we read %q %q", hreq.Method, hreq.RequestURI, req.Method, req.Target)
		}
		if hreq.Close != req.Close {
			t.Fatalf("net/http reads Close %v, we read %v", hreq.Close, req.Close)
		}
		hbody, err := io.ReadAll(hreq.Body)
		if err != nil && strings.Contains(err.Error(), "too much non-data") {
			return // net/http's overhead heuristic; we relay such bodies unchanged
		}
		if err != nil {
			t.Fatalf("net/http refuses the body we accept: %v", err)
		}
		decoded := []byte(body)
		if req.Framing == Chunked {
			if decoded, err = io.ReadAll(httputil.NewChunkedReader(strings.NewReader(body))); err != nil {
				t.Fatalf("decode our chunked copy: %v", err)
			}
		}
		if !bytes.Equal(hbody, decoded) {
			t.Fatalf("body differs: net/http %q, ours %q", hbody, decoded)
		}
		if hrest, _ := io.ReadAll(hbr); string(hrest) != rest {
			t.Fatalf("message end differs: net/http leaves %q, we leave %q", hrest, rest)
		}
	})
}

// FuzzCutField checks the one-pass field parser against the line by line
// one: the same field for every line it accepts, and a refusal (ok false)
// exactly where parseField names a reason.
func FuzzCutField(f *testing.F) {
	for _, l := range []string{"Host: a", "X:  b c \t", "X:", " X: a", "X : a", "X: a\x01", "X\x80: a", "X: \x80\xff", ": a", "X a"} {
		f.Add(l, true)
	}
	f.Fuzz(func(t *testing.T, line string, crlf bool) {
		if strings.ContainsAny(line, "\r\n") || line == "" {
			return // headEnd lets through only lines ending in LF, a CR only before it
		}
		end := "\n"
		if crlf {
			end = "\r\n"
		}
		got, rest, ok := cutField(line + end + "next")
		want, reason := parseField(line)
		if ok != (reason == "") || ok && (got != want || rest != "next") {
			t.Fatalf("cutField(%q) = %q, %q, %v; parseField: %q, %q", line, got, rest, ok, want, reason)
		}
	})
}

// sameInPlace checks that a head parsed in place (ReadRequestIn,
// ReadResponseIn: the relay loops' way) is the head parsed through a
// reader (ReadRequest, ReadResponse), from the same bytes: the same
// request or response, the same bytes taken, the same refusal, and
// "not whole yet" where the reader met the end of the bytes.
func sameInPlace(t *testing.T, data []byte) {
	t.Helper()
	br := bufio.NewReaderSize(bytes.NewReader(data), 16<<10)
	want, err := ReadRequest(br, Limits{})
	var got Request
	n, gotErr := ReadRequestIn(data, Limits{}, &got)
	sameOutcome(t, "request", err, gotErr, len(data))
	if err == nil {
		if taken := len(data) - remaining(br); n != taken || !reflect.DeepEqual(&got, want) {
			t.Fatalf("request in place: took %d, %+v; through a reader: took %d, %+v", n, got, taken, *want)
		}
	}
	get := &Request{Method: "GET", Major: 1, Minor: 1}
	br = bufio.NewReaderSize(bytes.NewReader(data), 16<<10)
	wantResp, err := ReadResponse(br, get, Limits{})
	var gotResp Response
	n, gotErr = ReadResponseIn(data, get, Limits{}, &gotResp)
	sameOutcome(t, "response", err, gotErr, len(data))
	if err == nil {
		if taken := len(data) - remaining(br); n != taken || !reflect.DeepEqual(&gotResp, wantResp) {
			t.Fatalf("response in place: took %d, %+v; through a reader: took %d, %+v", n, gotResp, taken, *wantResp)
		}
	}
}

// remaining is how many bytes br has not handed out.
func remaining(br *bufio.Reader) int {
	rest, _ := io.ReadAll(br)
	return len(rest)
}

// sameOutcome fails t unless both parses of n bytes failed alike or both
// succeeded. Past the reader's buffer (the loops' too) the reader reads
// line by line and refuses a line past the head limit as too large before
// it looks at its bytes, which in place may be refused for what they
// hold: refused either way, not always for the same reason.
func sameOutcome(t *testing.T, what string, reader, inPlace error, n int) {
	t.Helper()
	errs := []error{nil, io.EOF, io.ErrUnexpectedEOF, ErrBadRequest, ErrBadResponse}
	if n < 16<<10 {
		errs = append(errs, ErrHeadTooLarge)
	}
	for _, e := range errs {
		if e == nil && (reader == nil) != (inPlace == nil) || e != nil && errors.Is(reader, e) != errors.Is(inPlace, e) {
			t.Fatalf("%s: through a reader %v, in place %v", what, reader, inPlace)
		}
	}
}

func readFrom(data []byte, size int) (*Request, string, string, error) {
	br := bufio.NewReaderSize(bytes.NewReader(data), size)
	req, err := ReadRequest(br, Limits{})
	if err != nil {
		return nil, "", "", err
	}
	var body bytes.Buffer
	if _, err := CopyBody(&body, br, req.Framing, req.Length); err != nil {
		return nil, "", "", err
	}
	rest, _ := io.ReadAll(br)
	return req, body.String(), string(rest), nil
}

// FuzzCopyBody checks that a chunked body is relayed unchanged, that it ends
// exactly where the message ends (nothing after it is consumed, nothing of
// it is left) and that what we accept decodes.
func FuzzCopyBody(f *testing.F) {
	for _, tc := range smuggling {
		if _, body, ok := strings.Cut(tc.in, "\r\n\r\n"); ok {
			f.Add([]byte(body))
		}
	}
	f.Add([]byte("5;a=b;c=\"d\\\"\"\r\nhello\r\n0\r\nX: y\r\n\r\nGET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, size := range []int{16, 4096} {
			br := bufio.NewReaderSize(bytes.NewReader(data), size)
			var out bytes.Buffer
			n, err := CopyBody(&out, br, Chunked, 0)
			if n != int64(out.Len()) || !bytes.HasPrefix(data, out.Bytes()) {
				t.Fatalf("count %d for %d bytes written, or bytes changed", n, out.Len())
			}
			if err != nil {
				if !errors.Is(err, ErrBadRequest) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				continue
			}
			if rest, _ := io.ReadAll(br); out.Len()+len(rest) != len(data) {
				t.Fatalf("consumed past the message: wrote %d, left %d of %d", out.Len(), len(rest), len(data))
			}
			msg := out.Bytes()
			short := bufio.NewReader(bytes.NewReader(msg[:len(msg)-1]))
			if _, err := CopyBody(io.Discard, short, Chunked, 0); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("message ends before its last byte: %v", err)
			}
			if _, err := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(msg))); err != nil {
				t.Fatalf("httputil refuses what we accept: %v", err)
			}
		}
	})
}

func BenchmarkReadRequest(b *testing.B) {
	const req = "GET /api/v1/items?page=2&sort=name HTTP/1.1\r\n" +
		"Host: service.internal:8080\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\r\n" +
		"Accept: application/json\r\n" +
		"Accept-Encoding: gzip, deflate, br\r\n" +
		"Accept-Language: en-US,en;q=0.9\r\n" +
		"Cookie: session=0123456789abcdef; theme=dark\r\n" +
		"X-Forwarded-For: 203.0.113.7\r\n" +
		"X-Request-Id: 5f2b1c9e-3a4d-4e8f-9b0a-1c2d3e4f5a6b\r\n" +
		"Connection: keep-alive\r\n\r\n"
	benchHead(b, req, func(br *bufio.Reader) error {
		_, err := ReadRequest(br, Limits{})
		return err
	})
}

func BenchmarkReadResponse(b *testing.B) {
	const resp = "HTTP/1.1 200 OK\r\n" +
		"Server: nginx/1.22.1\r\n" +
		"Date: Fri, 04 Dec 2026 01:30:00 GMT\r\n" +
		"Content-Type: application/json\r\n" +
		"Content-Length: 612\r\n" +
		"Last-Modified: Thu, 03 Dec 2026 22:10:41 GMT\r\n" +
		"Connection: keep-alive\r\n" +
		"ETag: \"6750a1e1-264\"\r\n" +
		"Accept-Ranges: bytes\r\n\r\n"
	req := &Request{Method: "GET", Major: 1, Minor: 1}
	benchHead(b, resp, func(br *bufio.Reader) error {
		_, err := ReadResponse(br, req, Limits{})
		return err
	})
}

// benchHead measures read on head, from a reader reset for each op.
func benchHead(b *testing.B, head string, read func(*bufio.Reader) error) {
	r := strings.NewReader(head)
	br := bufio.NewReader(r)
	b.ReportAllocs()
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		r.Reset(head)
		br.Reset(r)
		if err := read(br); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeadForBackend is a short connection's request through a load
// balancer: "Connection: close" taken out for the pooled backend
// connection, then the response's head given "Connection: close".
func BenchmarkHeadForBackend(b *testing.B) {
	const raw = "GET /api/v1/items HTTP/1.1\r\n" +
		"Host: service.internal:8080\r\n" +
		"User-Agent: curl/7.88.1\r\n" +
		"Accept: */*\r\n" +
		"X-Forwarded-For: 203.0.113.7\r\n" +
		"Connection: close\r\n\r\n"
	req, err := ReadRequest(bufio.NewReader(strings.NewReader(raw)), Limits{})
	if err != nil {
		b.Fatal(err)
	}
	const head = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 612\r\nConnection: keep-alive\r\n\r\n"
	resp, err := ReadResponse(bufio.NewReader(strings.NewReader(head)), req, Limits{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(req.HeadForBackend()) >= len(req.Raw) || len(resp.HeadForClient(true)) == len(resp.Raw) {
			b.Fatal("nothing rewritten")
		}
	}
}

package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzChunkScanner checks that the scanner, fed a body in pieces (cut at
// the bytes of cuts), ends it where CopyBody ends it and refuses what
// CopyBody refuses; a body CopyBody finds cut short is not done (the
// scanner may refuse a wrong byte that CopyBody did not wait for).
func FuzzChunkScanner(f *testing.F) {
	for _, s := range []string{
		"3;a=\"b\"\r\nabc\r\n0\r\nX: y\r\n\r\nNEXT",
		"0\r\n\r\n",
		"a\r\n0123456789\r\n0\r\n\r\n",
		"3\r\nabc\n0\r\n\r\n",
		"3\r\nabcX\r\n",
		"g\r\n",
		"5\r\nab",
		"0\r\nBad Field\r\n\r\n",
		"1\r\na\r\n0\r\n" + strings.Repeat("X: y\r\n", 20) + "\r\n",
	} {
		f.Add([]byte(s), []byte{1, 3, 7})
		f.Add([]byte(s), []byte{2, 5})
	}
	f.Fuzz(func(t *testing.T, body, cuts []byte) {
		request := len(cuts)%2 == 1 // a request's body, checked against Request.CopyBody
		kind := ErrBadResponse
		want, werr := (&Response{Framing: Chunked}).CopyBody(io.Discard, bufio.NewReader(bytes.NewReader(body)))
		if request {
			kind = ErrBadRequest
			want, werr = (&Request{Framing: Chunked}).CopyBody(io.Discard, bufio.NewReader(bytes.NewReader(body)))
		}
		s := ChunkScanner{Request: request}
		n, done, err := 0, false, error(nil)
		for p, i := body, 0; len(p) > 0 && !done && err == nil; i++ {
			k := len(p)
			if i < len(cuts) {
				k = min(k, int(cuts[i])+1)
			}
			var m int
			m, done, err = s.Scan(p[:k])
			n += m
			if !done && err == nil && m != k {
				t.Fatalf("took %d of %d bytes, not done", m, k)
			}
			p = p[k:]
		}
		switch {
		case werr == nil && (!done || int64(n) != want):
			t.Fatalf("CopyBody ends the body after %d bytes; the scanner: done %v after %d (err %v)", want, done, n, err)
		case errors.Is(werr, kind) && err == nil:
			t.Fatalf("CopyBody refuses (%v); the scanner does not (done %v after %d)", werr, done, n)
		case errors.Is(werr, io.ErrUnexpectedEOF) && done:
			// The scanner may refuse a byte CopyBody has not looked at yet.
			t.Fatalf("CopyBody finds the body cut short; the scanner ends it after %d bytes", n)
		case err != nil && !errors.Is(err, kind):
			t.Fatalf("the scanner's refusal %v does not wrap %v", err, kind)
		case err != nil && werr == nil:
			t.Fatalf("the scanner refuses (%v) what CopyBody takes", err)
		}
	})
}

// A refused line is not counted: what the scanner counts may go on to
// the client (the loops relay each read as it comes), the malformed line
// must not, as CopyBody never writes it.
func TestChunkScannerRefusalStopsBeforeTheLine(t *testing.T) {
	for _, tc := range []struct {
		body string
		want int
	}{
		{"5\r\nhello\r\nzz\r\n", len("5\r\nhello\r\n")},
		{"zz\r\nhello", 0},
		{"5\r\nhello\r\n0\r\nBad Field\r\n\r\n", len("5\r\nhello\r\n0\r\n")},
	} {
		var s ChunkScanner
		n, done, err := s.Scan([]byte(tc.body))
		if !errors.Is(err, ErrBadResponse) || done || n != tc.want {
			t.Errorf("%q: %d bytes, done %v, %v; want %d, a refusal", tc.body, n, done, err, tc.want)
		}
	}
}

package http1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestPipelinedRequests(t *testing.T) {
	const (
		first  = "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;name=\"a long quoted value\"\r\nabc\r\n0\r\nX: y\r\n\r\n"
		second = "PUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nwxyz"
		third  = "GET /c HTTP/1.1\r\nHost: a\r\n\r\n"
	)
	for _, tc := range []struct {
		name    string
		r       io.Reader
		bufSize int
	}{
		{"one buffer", strings.NewReader(first + second + third), 4096},
		// Every boundary falls between reads.
		{"one byte a read", iotest.OneByteReader(strings.NewReader(first + second + third)), 16},
		// Heads and chunk lines longer than the buffer.
		{"smallest bufio", strings.NewReader(first + second + third), 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReaderSize(tc.r, tc.bufSize)
			var out bytes.Buffer
			var targets []string
			for {
				req, err := ReadRequest(br, Limits{})
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				targets = append(targets, req.Target)
				out.Write(req.Raw)
				if _, err := CopyBody(&out, br, req.Framing, req.Length); err != nil {
					t.Fatal(err)
				}
			}
			if got := strings.Join(targets, " "); got != "/a /b /c" {
				t.Fatalf("targets %q", got)
			}
			if out.String() != first+second+third {
				t.Fatalf("bytes changed: %q", out.String())
			}
		})
	}
}

func TestTruncatedMessages(t *testing.T) {
	for name, in := range map[string]string{
		"head":          "GET / HTTP/1.1\r\nHost",
		"length body":   "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",
		"chunk data":    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
		"chunk CRLF":    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r",
		"trailer":       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
		"chunked empty": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, _, _, err := readMessage(t, in)
			if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrBadRequest) {
				t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
	t.Run("clean close between requests", func(t *testing.T) {
		for _, in := range []string{"", "\r\n"} {
			if _, err := ReadRequest(bufio.NewReader(strings.NewReader(in)), Limits{}); err != io.EOF {
				t.Fatalf("%q: got %v, want io.EOF", in, err)
			}
		}
	})
}

func TestLongHeadAcrossBuffer(t *testing.T) {
	long := "GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + strings.Repeat("v", 10000) + "\r\n\r\n"
	br := bufio.NewReaderSize(strings.NewReader(long+"NEXT"), 16)
	req, err := ReadRequest(br, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if string(req.Raw) != long || len(req.Header) != 2 || len(req.Header[1].Value) != 10000 {
		t.Fatalf("Raw %d bytes, %d fields", len(req.Raw), len(req.Header))
	}
	if rest, _ := io.ReadAll(br); string(rest) != "NEXT" {
		t.Fatalf("rest %q", rest)
	}
	br = bufio.NewReaderSize(strings.NewReader(long), 16)
	req, err = ReadRequest(br, Limits{MaxHeadBytes: 1000})
	if !errors.Is(err, ErrHeadTooLarge) || !errors.Is(err, ErrBadRequest) {
		t.Fatalf("got %v, want ErrHeadTooLarge", err)
	}
	// What it consumed comes back for the caller's count: with what is
	// left in br, the whole of what came.
	rest, _ := io.ReadAll(br)
	if req == nil || len(req.Raw) <= 1000 || len(req.Raw)+len(rest) != len(long) {
		t.Fatalf("refused head: %v consumed, %d left, want all %d bytes accounted for", req, len(rest), len(long))
	}
	// The same of a head longer than the buffer that the client cut short.
	cut := long[:len(long)-10]
	br = bufio.NewReaderSize(strings.NewReader(cut), 16)
	req, err = ReadRequest(br, Limits{})
	rest, _ = io.ReadAll(br)
	if !errors.Is(err, io.ErrUnexpectedEOF) || req == nil || len(req.Raw)+len(rest) != len(cut) {
		t.Fatalf("head cut short: %v, %v consumed, %d left; want unexpected EOF, all %d bytes accounted for", err, req, len(rest), len(cut))
	}
}

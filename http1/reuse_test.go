package http1

import (
	"bufio"
	"reflect"
	"strings"
	"testing"
)

// A request read in place into a Request that held a longer one is the
// request read, field for field, as ReadRequest gives it: nothing of the
// one before is left (fields, framing, connection facts), and its head is
// in the storage the one before left, without an allocation.
func TestReadRequestInReuses(t *testing.T) {
	const first = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\nX-A: 1\r\nX-B: 2\r\n\r\n"
	const second = "GET /x HTTP/1.0\r\nHost: b\r\n\r\n"
	var r Request
	if _, err := ReadRequestIn([]byte(first), Limits{}, &r); err != nil {
		t.Fatal(err)
	}
	raw, fields := &r.Raw[:1][0], &r.Header[:1][0]
	n, err := ReadRequestIn([]byte(second+"next"), Limits{}, &r)
	if err != nil {
		t.Fatal(err)
	}
	want := mustRequest(t, second)
	if n != len(second) || !reflect.DeepEqual(&r, want) {
		t.Errorf("read into a used Request: took %d of %d\n%+v\nwant as ReadRequest gives it:\n%+v", n, len(second), r, *want)
	}
	if &r.Raw[0] != raw || &r.Header[0] != fields {
		t.Error("the second head did not reuse the first one's storage")
	}
	b := []byte(second)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ReadRequestIn(b, Limits{}, &r); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ReadRequestIn into a used Request: %v allocations, want 0", n)
	}
}

// The same for a response: a 200 read into what a 100 Continue with more
// fields used, then reading into it allocates nothing.
func TestReadResponseInReuses(t *testing.T) {
	const first = "HTTP/1.1 100 Continue\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n"
	const second = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
	req := mustRequest(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	var r Response
	if _, err := ReadResponseIn([]byte(first), req, Limits{}, &r); err != nil {
		t.Fatal(err)
	}
	n, err := ReadResponseIn([]byte(second+"body..."), req, Limits{}, &r)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReadResponse(bufio.NewReader(strings.NewReader(second)), req, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(second) || !reflect.DeepEqual(&r, want) {
		t.Errorf("read into a used Response: took %d of %d\n%+v\nwant as ReadResponse gives it:\n%+v", n, len(second), r, *want)
	}
	b := []byte(second)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ReadResponseIn(b, req, Limits{}, &r); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ReadResponseIn into a used Response: %v allocations, want 0", n)
	}
}

//go:build linux

package main

import "testing"

func TestParseAB(t *testing.T) {
	out := `Server Software:        nginx/1.22.1
Document Path:          /
Concurrency Level:      50
Time taken for tests:   2.712 seconds
Complete requests:      20000
Failed requests:        3
   (Connect: 0, Receive: 0, Length: 3, Exceptions: 0)
Non-2xx responses:      2
Requests per second:    7374.52 [#/sec] (mean)
`
	r, err := parseAB(out)
	if err != nil {
		t.Fatal(err)
	}
	if r != (abResult{complete: 20000, failed: 3, non2xx: 2}) {
		t.Errorf("parsed %+v", r)
	}
	if _, err := parseAB("apr_socket_recv: Connection refused (111)\n"); err == nil {
		t.Error("a report without counts parsed")
	}
}

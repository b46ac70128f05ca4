package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

// FuzzLoopHeaderMatchesIntake: the loops' header reading (headerIn, on
// every prefix of the input as it might arrive, then the whole of it at
// the client's FIN) takes the same header off the front as readHeader on
// a goroutine, or refuses where it refuses: no input loses or gains a
// byte by the way it is read.
func FuzzLoopHeaderMatchesIntake(f *testing.F) {
	v1 := "PROXY TCP4 192.0.2.7 192.0.2.1 5555 80\r\n"
	v2 := v2Header(f)
	get := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, s := range []string{
		"", get, v1, v1 + get, v2, v2 + get, "PROXY UNKNOWN\r\n" + get,
		"PROXY TCP6 2001:db8::7 2001:db8::1 40000 8080\r\n" + get,
		v1[:17], v1[:len(v1)-1], v2[:13], v2[:len(v2)-3], "PROXY", "\r\n\r\n\x00\r\nQUIT\n",
		"PROXY TCP4 999.1.1.1 192.0.2.1 1 2\r\n", "PROXY " + string(bytes.Repeat([]byte("x"), 200)) + "\r\n",
		v2[:12] + "\x21\x11\xff\xff" + get, v2[:12] + "\x20\x00\x00\x00" + get, "\x00\xff garbage",
	} {
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		// The goroutine's way: all of data, then EOF.
		r := bytes.NewReader(data)
		br := bufio.NewReader(r)
		ghdr, gerr := readHeader(br)
		gused := len(data) - r.Len() - br.Buffered()
		// The loop's way: data arriving step bytes at a time.
		var lhdr *proxyproto.Header
		var lused int
		var lerr error
		done := false
		for n := min(int(step)+1, len(data)); !done; n = min(n+int(step)+1, len(data)) {
			lhdr, lused, lerr, done = headerIn(data[:n])
			if !done && n == len(data) { // the FIN: what came is all there is
				lerr, done = errors.New("EOF"), true
			}
		}
		switch {
		case (gerr == nil) != (lerr == nil):
			t.Fatalf("goroutine: %v; loop: %v", gerr, lerr)
		case gerr == nil && (gused != lused || ghdr.Version != lhdr.Version || fmt.Sprint(ghdr.SourceAddr) != fmt.Sprint(lhdr.SourceAddr) ||
			fmt.Sprint(ghdr.DestinationAddr) != fmt.Sprint(lhdr.DestinationAddr)):
			t.Fatalf("goroutine took %d bytes (v%d %s→%s), loop %d (v%d %s→%s)", gused, ghdr.Version, ghdr.SourceAddr, ghdr.DestinationAddr,
				lused, lhdr.Version, lhdr.SourceAddr, lhdr.DestinationAddr)
		case errors.Is(gerr, proxyproto.ErrNoProxyProtocol) != errors.Is(lerr, proxyproto.ErrNoProxyProtocol):
			t.Fatalf("no header: goroutine %v, loop %v", gerr, lerr)
		}
	})
}

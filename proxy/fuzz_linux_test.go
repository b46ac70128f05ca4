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
	for _, s := range intakeSeeds(f) {
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
		k := newLoopKeep()
		for n := min(int(step)+1, len(data)); !done; n = min(n+int(step)+1, len(data)) {
			lhdr, lused, lerr, done = headerIn(k, data[:n])
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

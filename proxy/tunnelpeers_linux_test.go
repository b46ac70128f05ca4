package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
	"github.com/closeproxy/closeproxy/internal/kernelclaims"
	"github.com/closeproxy/closeproxy/internal/loopback"
	"github.com/closeproxy/closeproxy/policy"
	"github.com/closeproxy/closeproxy/procnet"
)

// The peers a tunnel meets, each named in the X-Peer header of the
// upgrade or CONNECT that opens it.
const (
	peerPaused = "paused" // the client half-closes after its head, then reads nothing for tunnelPause while the backend sends tunnelDown and closes
	peerRacing = "racing" // the backend closes right after one segment, the client the instant it has it: the FINs race
	peerEOF    = "eof"    // the client sends tunnelUp and half-closes; the backend answers its SHA-256 only at EOF
	peerStall  = "stall"  // the backend reads but never answers: idle_timeout ends the tunnel
	peerAbort  = "abort"  // the client resets mid-stream while the backend still sends
)

const (
	tunnelDown  = 4 << 20
	tunnelUp    = 1 << 20
	tunnelPause = time.Second // over three times testClose's peer_fin_grace
	tunnelIdle  = 2 * time.Second
	racingBody  = 1000
)

// tunnelPeers says how many tunnels of each kind a run opens.
var tunnelPeers = []struct {
	kind string
	n    int
}{{peerPaused, 2}, {peerRacing, 20}, {peerEOF, 2}, {peerStall, 1}, {peerAbort, 2}}

// TestHTTP1LoopTunnelPeers: tunnels (upgrades and CONNECTs the backend
// accepted) against the close matrix's peers, under each TIME-WAIT
// target, all at once. Every stream arrives whole by SHA-256 (or, cut by
// a reset or a timeout, is recorded so); every record's TIME-WAIT claim
// matches the kernel's sockets by 4-tuple.
func TestHTTP1LoopTunnelPeers(t *testing.T) {
	for _, target := range []policy.Target{policy.TargetProxy, policy.TargetPeer, policy.TargetNowhere} {
		t.Run(string(target), func(t *testing.T) { runTunnelPeers(t, target) })
	}
}

// tunnelSeen is what a client of runTunnelPeers saw.
type tunnelSeen struct {
	kind   string
	got    []byte // the tunnel's bytes after the backend's 101 or 200
	err    error  // how its read ended, nil at EOF
	took   time.Duration
	failed string // the client could not play its part
}

func runTunnelPeers(t *testing.T, target policy.Target) {
	down := make([]byte, tunnelDown)
	for i := range down {
		down[i] = byte(i*7 + i>>11)
	}
	up := down[:tunnelUp]
	stop := make(chan struct{})
	be := loopback.Serve(t, func(c *net.TCPConn) { tunnelBackend(c, down, stop) })
	t.Cleanup(func() { close(stop) }) // before Serve's: a stalled backend lets go
	ln := config.Listener{Close: testClose(target, policy.FallbackFIN), IdleTimeout: tunnelIdle}
	h := startProxy(t, ln, http1Backend(be))
	mark := procnet.MarkTimeWaitOverflow()

	seen := map[string]*tunnelSeen{} // by the client's address
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := 0
	for _, p := range tunnelPeers {
		for i := range p.n {
			n++
			c := dialClient(t, h.addr, false)
			s := &tunnelSeen{kind: p.kind}
			mu.Lock()
			seen[c.LocalAddr().String()] = s
			mu.Unlock()
			wg.Go(func() { tunnelClient(c, s, i%2 == 1, up) })
		}
	}
	wg.Wait()

	var recs []*engine.Teardown
	for range n {
		recs = append(recs, h.record(t))
	}
	sum := func(b []byte) [32]byte { return sha256.Sum256(b) }
	for _, td := range recs {
		s := seen[td.Front.Peer.String()]
		if s == nil {
			t.Errorf("record %d: client %s is none of the test's", td.ID, td.Front.Peer)
			continue
		}
		if s.failed != "" {
			t.Errorf("%s client %s: %s", s.kind, td.Front.Peer, s.failed)
			continue
		}
		ok := td.Outcome == engine.OutcomeOK && !td.Front.Cut && !td.Back.Cut
		// A stream ends well at EOF, or at a safe reset the record names.
		endedWell := s.err == nil || errors.Is(s.err, syscall.ECONNRESET) && td.Front.Close == policy.CloseReset && !td.Front.Cut
		if ok && (td.Front.BytesOut != td.Back.BytesIn || td.Front.BytesIn != td.Back.BytesOut) {
			t.Errorf("%s: record %d counts %d bytes in from the backend and %d out to the client, %d in from the client and %d out to the backend; want each way equal",
				s.kind, td.ID, td.Back.BytesIn, td.Front.BytesOut, td.Front.BytesIn, td.Back.BytesOut)
		}
		switch s.kind {
		case peerPaused:
			if !endedWell || sum(s.got) != sum(down) || !ok {
				t.Errorf("paused reader: read %d of %d bytes (SHA-256 equal %v), ending %v; record %s cut %v/%v",
					len(s.got), len(down), sum(s.got) == sum(down), s.err, td.Outcome, td.Front.Cut, td.Back.Cut)
			}
		case peerRacing:
			if len(s.got) != racingBody || !ok {
				t.Errorf("racing FINs: read %d of %d bytes; record %s (%v) cut %v/%v", len(s.got), racingBody, td.Outcome, td.Err, td.Front.Cut, td.Back.Cut)
			}
		case peerEOF:
			want := sha256.Sum256(up)
			if !endedWell || string(s.got) != hex.EncodeToString(want[:]) || !ok || td.Front.BytesIn < tunnelUp {
				t.Errorf("backend at EOF: answered %q after %v; record %s cut %v/%v, %d bytes in from the client",
					s.got, s.err, td.Outcome, td.Front.Cut, td.Back.Cut, td.Front.BytesIn)
			}
		case peerStall:
			if td.Outcome != engine.OutcomeTimeout || s.took < tunnelIdle*9/10 || s.took > tunnelIdle+3*time.Second || len(s.got) != 0 {
				t.Errorf("stalled backend: record %s (%v); the client's read ended after %v (%v) with %d bytes; want timeout after idle_timeout %v",
					td.Outcome, td.Err, s.took, s.err, len(s.got), tunnelIdle)
			}
		case peerAbort:
			if td.Outcome != engine.OutcomeClientReset || !td.Back.Cut {
				t.Errorf("client reset mid-stream: record %s (%v), back cut %v; want client_reset, the backend leg cut\nfront %+v\nback %+v", td.Outcome, td.Err, td.Back.Cut, td.Front, td.Back)
			}
		}
	}

	var legs []kernelclaims.Leg
	for _, td := range recs {
		legs = append(legs,
			kernelclaims.Leg{Session: td.ID, Name: "front", Local: td.Front.Local, Peer: td.Front.Peer, TimeWait: td.Front.TimeWait},
			kernelclaims.Leg{Session: td.ID, Name: "back", Local: td.Back.Local, Peer: td.Back.Peer, TimeWait: td.Back.TimeWait})
	}
	kernelclaims.Settle(t, legs)
	// Whose FIN came first is at times only seen by the looks every few
	// milliseconds after the proxy's (a backend that answers at EOF acks
	// it and closes within one look, busier under the race detector): a
	// leg in ten may honestly say unknown. A racing client's front leg is
	// counted apart: its FIN and the proxy's cross by design, and which
	// came first is provable only when a reading lands between them.
	// Under the race detector 8 to 12 of its 20 legs said unknown in
	// some runs and none in others, alone or beside other packages'
	// tests, in builds before and after the readings were trimmed.
	// Every claim any leg makes is still checked against the kernel's
	// sockets.
	unknown := kernelclaims.Check(t, legs, mark)
	var which []string
	racing := 0
	for _, td := range recs {
		kind := seen[td.Front.Peer.String()].kind
		for name, l := range map[string]engine.LegRecord{"front": td.Front, "back": td.Back} {
			if l.TimeWait != policy.SideUnknown {
				continue
			}
			if kind == peerRacing && name == "front" {
				racing++
				continue
			}
			which = append(which, fmt.Sprintf("%s %s close %s", kind, name, l.Close))
		}
	}
	t.Logf("unknown: %d racing front legs, %d others", racing, unknown-racing)
	if unknown-racing > len(legs)/10 {
		t.Errorf("%d legs of %d unknown besides racing front legs, want at most one in ten: %v", unknown-racing, len(legs), which)
	}
}

// tunnelBackend accepts one upgrade or CONNECT and plays the peer its
// X-Peer header names.
func tunnelBackend(c *net.TCPConn, down []byte, stop <-chan struct{}) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	head := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: peers\r\n\r\n"
	if req.Method == "CONNECT" {
		head = "HTTP/1.1 200 Connection Established\r\n\r\n"
	}
	switch req.Header.Get("X-Peer") {
	case peerPaused, peerAbort:
		c.Write(append([]byte(head), down...))
	case peerRacing:
		c.Write(append([]byte(head), down[:racingBody]...)) // one segment, the FIN right behind it
	case peerEOF:
		io.WriteString(c, head)
		h := sha256.New()
		if _, err := io.Copy(h, br); err == nil {
			io.WriteString(c, hex.EncodeToString(h.Sum(nil)))
		}
	case peerStall:
		io.WriteString(c, head)
		go func() { io.Copy(io.Discard, br); c.Close() }() // reads on, answers nothing
		<-stop
	}
}

// tunnelClient opens a tunnel (a CONNECT when connect is set, else an
// upgrade) and plays the client of its kind.
func tunnelClient(c *net.TCPConn, s *tunnelSeen, connect bool, up []byte) {
	head := fmt.Sprintf("GET /tunnel HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: peers\r\nX-Peer: %s\r\n\r\n", s.kind)
	if connect {
		head = fmt.Sprintf("CONNECT %s.test:443 HTTP/1.1\r\nHost: %[1]s.test:443\r\nX-Peer: %[1]s\r\n\r\n", s.kind)
	}
	fail := func(format string, a ...any) { s.failed = fmt.Sprintf(format, a...) }
	if _, err := io.WriteString(c, head); err != nil {
		fail("head: %v", err)
		return
	}
	switch s.kind {
	case peerPaused:
		c.CloseWrite()
		time.Sleep(tunnelPause) // the peer under test: a reader that pauses
	case peerEOF:
		if _, err := c.Write(up); err != nil {
			fail("send: %v", err)
			return
		}
		c.CloseWrite()
	case peerStall:
		io.WriteString(c, "ping")
	}
	start := time.Now()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(head)[0]})
	if err != nil || resp.StatusCode/100 > 2 {
		fail("response head: %v %v", resp, err)
		return
	}
	switch s.kind {
	case peerRacing:
		s.got = make([]byte, racingBody)
		_, s.err = io.ReadFull(br, s.got)
		c.Close() // the instant it has the body
		return
	case peerAbort:
		if _, err := io.ReadFull(br, make([]byte, 64<<10)); err != nil {
			fail("read before the reset: %v", err)
		}
		c.SetLinger(0)
		c.Close()
		return
	}
	s.got, s.err = io.ReadAll(br)
	s.took = time.Since(start)
	if errors.Is(s.err, net.ErrClosed) {
		fail("read: %v", s.err)
	}
}

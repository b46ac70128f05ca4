package engine

import (
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFinOrder reads the FIN order from readings as the kernel gives them,
// the ACK of earlier data arriving after the proxy's FIN included.
func TestFinOrder(t *testing.T) {
	est := func(in uint32) tcpCounts { return tcpCounts{ok: true, state: stateEstablished, segsIn: in} }
	at := func(state uint8, in uint32) tcpCounts { return tcpCounts{ok: true, state: state, segsIn: in} }
	cases := []struct {
		name string
		o    finObs
		want order
	}{
		{"peer's FIN in before ours", finObs{taken: true, base: est(5), pre: stateCloseWait}, orderPeer},
		{"acknowledged at once", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait2}, orderProxy},
		{"FIN+ACK, one segment", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			eof: at(stateTimeWait, 6)}, orderProxy},
		{"crossed, caught in CLOSING", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			eof: at(stateClosing, 6)}, orderCrossed},
		{"data ACK, then FIN+ACK, FIN-WAIT-1 seen between", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			lastFW1: 7, eof: at(stateTimeWait, 7)}, orderProxy},
		{"data ACK, then two segments after the last look", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			lastFW1: 7, eof: at(stateTimeWait, 8)}, orderUnknown},
		{"two segments, no look between", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			eof: at(stateTimeWait, 7)}, orderUnknown},
		{"FIN-WAIT-2 seen", finObs{taken: true, base: est(5), pre: stateEstablished, post: est(5), after: stateFinWait1,
			sawFW2: true, eof: at(stateTimeWait, 9)}, orderProxy},
		{"no readings", finObs{}, orderUnknown},
	}
	for _, c := range cases {
		if got := finOrder(c.o); got != c.want {
			t.Errorf("%s: finOrder = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestFinOrderSkippedReadings checks the readings the engine leaves out:
// with the leg not in FIN-WAIT-1 right after the proxy's FIN, finOrder
// never uses the counters then (afterFIN reads once), and where
// eofDecides is false it never uses those at the peer's FIN (atPeerFIN
// reads none). Every pair of states, against counters that change the
// verdict where they are used.
func TestFinOrderSkippedReadings(t *testing.T) {
	states := []uint8{stateEstablished, stateFinWait1, stateFinWait2, stateTimeWait, stateClose,
		stateCloseWait, stateLastAck, stateClosing}
	base := tcpCounts{ok: true, state: stateEstablished, segsIn: 5, segsOut: 5, dataSegsIn: 1, dataSegsOut: 1}
	counts := []tcpCounts{
		{},
		base,
		{ok: true, state: stateTimeWait, segsIn: 6, segsOut: 6, dataSegsIn: 1, dataSegsOut: 1},
		{ok: true, state: stateClosing, segsIn: 6, segsOut: 5, dataSegsIn: 1, dataSegsOut: 1},
		{ok: true, state: stateTimeWait, segsIn: 9, segsOut: 6, dataSegsIn: 1, dataSegsOut: 1},
	}
	// verdicts returns finOrder of o with each of counts put in by set.
	verdicts := func(o finObs, set func(*finObs, tcpCounts)) map[order]bool {
		seen := map[order]bool{}
		for _, c := range counts {
			v := o
			set(&v, c)
			seen[finOrder(v)] = true
		}
		return seen
	}
	usesPost, usesEOF := 0, 0
	for _, pre := range states {
		for _, after := range states {
			for _, fixed := range counts {
				o := finObs{taken: true, base: base, pre: pre, post: fixed, after: after, eof: fixed}
				if v := verdicts(o, func(o *finObs, c tcpCounts) { o.post = c }); len(v) > 1 {
					usesPost++
					if !finWait1(after) {
						t.Errorf("pre %d, after %d: the verdict depends on the counters right after the FIN, which afterFIN reads only in FIN-WAIT-1 (%v)", pre, after, v)
					}
				}
				if v := verdicts(o, func(o *finObs, c tcpCounts) { o.eof = c }); len(v) > 1 {
					usesEOF++
					if !o.eofDecides() {
						t.Errorf("pre %d, after %d: the verdict depends on the counters at the peer's FIN, which eofDecides says need no reading (%v)", pre, after, v)
					}
				}
			}
		}
	}
	if usesPost == 0 || usesEOF == 0 {
		t.Fatalf("no verdict moved with the counters (right after the FIN: %d, at the peer's: %d): the test proves nothing", usesPost, usesEOF)
	}
}

// The readings right after the proxy's FIN serve as the one at the peer's
// FIN when either found the leg closed (its counters are final), and only
// then: atPeerFIN reads again for every other state.
func TestNoteAfterKeepsAClosedReading(t *testing.T) {
	fw1 := tcpCounts{ok: true, state: stateFinWait1, segsIn: 5, segsOut: 6}
	closed := tcpCounts{ok: true, state: stateClose, segsIn: 7, segsOut: 6}
	fw2 := tcpCounts{ok: true, state: stateFinWait2, segsIn: 6, segsOut: 6}
	for _, c := range []struct {
		name    string
		p, s    tcpCounts
		after   uint8
		eof     tcpCounts // kept for the peer's FIN; zero: none, atPeerFIN reads
		readsAt bool      // atPeerFIN reads at the peer's FIN (pre ESTABLISHED)
	}{
		{"closed inside the shutdown call", closed, tcpCounts{}, stateClose, closed, false},
		{"FIN-WAIT-1, then closed", fw1, closed, stateClose, closed, false},
		{"FIN-WAIT-1, then FIN-WAIT-2", fw1, fw2, stateFinWait2, tcpCounts{}, false},
		{"FIN-WAIT-1 twice", fw1, fw1, stateFinWait1, tcpCounts{}, true},
		{"FIN-WAIT-1, then no reading", fw1, tcpCounts{}, 0, tcpCounts{}, false},
		{"FIN-WAIT-2 at once", fw2, tcpCounts{}, stateFinWait2, tcpCounts{}, false},
	} {
		o := finObs{taken: true, pre: stateEstablished}
		o.noteAfter(c.p, c.s)
		if o.after != c.after || o.eof != c.eof || o.post != c.p {
			t.Errorf("%s: after %d, eof %+v, post %+v; want %d, %+v, %+v", c.name, o.after, o.eof, o.post, c.after, c.eof, c.p)
		}
		if reads := o.eofDecides() && !o.eof.ok; reads != c.readsAt {
			t.Errorf("%s: atPeerFIN reads %v, want %v", c.name, reads, c.readsAt)
		}
	}
}

// TestBaseBeforePeerFIN: the second reading before the proxy's FIN is
// left out only where the base's bytes received are exactly what the loop
// read: a FIN would count one more.
func TestBaseBeforePeerFIN(t *testing.T) {
	est := func(received uint64) tcpCounts {
		return tcpCounts{ok: true, state: stateEstablished, received: received}
	}
	for _, c := range []struct {
		name string
		conn sock
		base tcpCounts
		want bool
	}{
		{"all read, no FIN", &fdSock{got: 120}, est(120), true},
		{"the peer's FIN in the counters", &fdSock{got: 120}, est(121), false},
		{"unread bytes", &fdSock{got: 100}, est(120), false},
		{"read more since the base", &fdSock{got: 130}, est(120), false},
		{"the state already shows the FIN", &fdSock{got: 120}, tcpCounts{ok: true, state: stateCloseWait, received: 120}, false},
		{"nothing read, nothing counted (a kernel without the counter)", &fdSock{}, est(0), false},
		{"no reading", &fdSock{got: 120}, tcpCounts{}, false},
		{"on goroutines", new(net.TCPConn), est(120), false},
	} {
		l := &leg{conn: c.conn, fo: &finObs{base: c.base}}
		if got := l.baseBeforePeerFIN(); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestLoopCountsWhatTheKernelCounts: on real sockets, what a loop's
// socket counts read is the kernel's bytes received while no FIN is in,
// and one less once the peer's FIN is (read or not): the premise of
// baseBeforePeerFIN.
func TestLoopCountsWhatTheKernelCounts(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, mine := dialPair(ln)
	defer peer.Close()
	defer mine.Close()
	fd, err := ConnFD(mine)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	s := &fdSock{fd: fd}
	l := &leg{conn: s, info: infoReader{}}
	buf := make([]byte, 7000)
	// readUntil reads (a short buffer, so several reads) until the loop's
	// socket counted want bytes; EOF, an error or 5 s without them fail.
	readUntil := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for s.got < want && time.Now().Before(deadline) {
			s.rd = true
			n, err := s.taskSock().Read(buf[:700])
			if err == ErrWouldBlock {
				waitReadable(t, fd)
				continue
			}
			if err != nil || n == 0 {
				t.Fatalf("read after %d bytes: %d, %v", s.got, n, err)
			}
		}
		if s.got < want {
			t.Fatalf("the loop's socket counted %d bytes in 5 s, want %d", s.got, want)
		}
	}
	if _, err := peer.Write(buf[:5000]); err != nil {
		t.Fatal(err)
	}
	readUntil(5000)
	if a := l.tcp(); !a.ok || a.received != s.got || a.state != stateEstablished {
		t.Fatalf("all read: kernel %+v, loop read %d; want equal, established", a, s.got)
	}
	l.fo = &finObs{base: l.tcp()}
	if !l.baseBeforePeerFIN() {
		t.Errorf("all read, no FIN: the base is not taken for one before the peer's FIN: %+v, read %d", l.fo.base, s.got)
	}
	if _, err := peer.Write(buf[:1234]); err != nil {
		t.Fatal(err)
	}
	if err := peer.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	readUntil(5000 + 1234)
	waitFINIn(t, fd)
	a := l.tcp()
	if a.state != stateCloseWait {
		t.Fatalf("the peer's FIN in: state %d, want CLOSE-WAIT", a.state)
	}
	if a.received != s.got+1 {
		t.Errorf("the peer's FIN in: kernel received %d, loop read %d; want one more", a.received, s.got)
	}
	l.fo.base = tcpCounts{ok: true, state: stateEstablished, received: a.received} // a base whose state was read just before the FIN came
	if l.baseBeforePeerFIN() {
		t.Errorf("a base that counted the peer's FIN is taken for one before it")
	}
	s.rd = true
	if n, err := s.taskSock().Read(buf); n != 0 || err != nil {
		t.Fatalf("at the peer's FIN: read %d, %v; want EOF", n, err)
	}
	if s.got != 5000+1234 {
		t.Errorf("after EOF the loop counted %d, want %d: EOF is no byte", s.got, 5000+1234)
	}
}

// waitReadable waits, at most a second, for fd to have something to read.
func waitReadable(t *testing.T, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, 1000); err != nil && err != unix.EINTR {
		t.Fatal(err)
	}
}

// waitFINIn waits, at most 5 s, for the peer's FIN on fd (POLLRDHUP): the
// kernel sets CLOSE-WAIT before it wakes a poller.
func waitFINIn(t *testing.T, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		n, err := unix.Poll(fds, 1000)
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if n > 0 && fds[0].Revents&unix.POLLRDHUP != 0 {
			return
		}
	}
	t.Fatal("no FIN from the peer within 5 s")
}

package engine

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// A RawWriter writes both buffers whole and in order, waiting while the
// socket's send buffer is full (8 MiB is more than loopback's buffers
// hold, so it must wait), and its count is what the peer read.
func TestRawWriterWritesWholeAndWaits(t *testing.T) {
	w, c, peer := rawWriterPair(t)
	a, b := make([]byte, 3<<20), make([]byte, 5<<20)
	rand.Read(a)
	rand.Read(b)
	type read struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan read, 1)
	go func() {
		h := sha256.New()
		n, err := io.Copy(h, peer)
		var r read
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	n, err := w.Writev(a, b)
	if err != nil || n != len(a)+len(b) {
		t.Fatalf("Writev wrote %d, %v; want %d, nil", n, err, len(a)+len(b))
	}
	if n, err := w.Write([]byte("end")); err != nil || n != 3 {
		t.Fatalf("Write wrote %d, %v; want 3, nil", n, err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	r := <-got
	want := sha256.Sum256(bytes.Join([][]byte{a, b, []byte("end")}, nil))
	if r.err != nil || r.n != int64(len(a)+len(b)+3) || r.sum != want {
		t.Errorf("peer read %d bytes (%v), SHA-256 match %v; want %d bytes, a match", r.n, r.err, r.sum == want, len(a)+len(b)+3)
	}
}

// A write that cannot finish by the connection's write deadline returns
// os.ErrDeadlineExceeded with what it wrote (none, if the host's TCP
// memory was short from the first call).
func TestRawWriterKeepsTheDeadline(t *testing.T) {
	w, c, _ := rawWriterPair(t) // the peer reads nothing
	if err := c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 32<<20)
	n, err := w.Writev(big, nil)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n < 0 || n >= len(big) {
		t.Errorf("Writev past the deadline: %d bytes, %v; want some of %d, os.ErrDeadlineExceeded", n, err, len(big))
	}
}

// Ask writes the request whole and returns only once the peer's reply
// may be read: the reply is then in the socket, unread (a read without
// waiting finds it whole), and Ask itself allocates nothing.
func TestRawWriterAskWaitsForTheReply(t *testing.T) {
	w, c, peer := rawWriterPair(t)
	const ask, reply = "ping\n", "pong\n"
	got, release := make(chan string, 1), make(chan struct{})
	go func() {
		b := make([]byte, len(ask))
		_, err := io.ReadFull(peer, b)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
		<-release
		io.WriteString(peer, reply)
	}()
	done := make(chan error, 1)
	go func() {
		n, err := w.Ask([]byte(ask))
		if err == nil && n != len(ask) {
			err = fmt.Errorf("wrote %d of %d bytes", n, len(ask))
		}
		done <- err
	}()
	if g := <-got; g != ask {
		t.Fatalf("peer read %q, want %q", g, ask)
	}
	select {
	case err := <-done:
		t.Fatalf("Ask returned (%v) before the peer replied", err)
	default:
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 16)
	fd, err := ConnFD(c)
	if err != nil {
		t.Fatal(err)
	}
	n, _, err := syscall.Recvfrom(fd, b, syscall.MSG_DONTWAIT|syscall.MSG_PEEK)
	if err != nil || string(b[:n]) != reply {
		t.Fatalf("after Ask the socket holds %q (%v), want the reply %q", b[:max(n, 0)], err, reply)
	}

	// Once more, for the allocations: the peer echoes each ask.
	buf, p := make([]byte, len(reply)), []byte(ask)
	go io.Copy(peer, peer)
	if _, err := io.ReadFull(c, buf); err != nil { // the first reply
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := w.Ask(p); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("Ask and its reply's read allocate %.1f times, want none", allocs)
	}
}

// Ask's wait ends at the read deadline with the write done; the read that
// follows meets the deadline. A write that fails is Ask's error.
func TestRawWriterAskKeepsTheDeadlineAndWriteErrors(t *testing.T) {
	w, c, peer := rawWriterPair(t) // the peer never replies
	if err := c.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Ask([]byte("ping\n")); n != 5 || err != nil {
		t.Fatalf("Ask with no reply: %d, %v; want 5, nil", n, err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Ask past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}

	if err := peer.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	peer.Close() // a reset: the next write fails
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var werr error
	for range 3 { // the first write after the reset may still be taken
		if _, werr = w.Ask([]byte("ping\n")); werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(werr, syscall.EPIPE) {
		t.Errorf("Ask to a reset peer: %v, want ECONNRESET or EPIPE", werr)
	}
}

// A RawReader waits for bytes, reads what is there (a stream of 4 MiB
// arrives whole, by SHA-256), returns io.EOF at the peer's FIN, keeps the
// read deadline and allocates nothing per read.
func TestRawReaderReadsWaitsAndEnds(t *testing.T) {
	ln := loopback.Listener(t)
	c, peer := loopback.Pair(t, ln)
	r, err := NewRawReader(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Read(make([]byte, 8)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with nothing sent, past the deadline: %d, %v; want 0, os.ErrDeadlineExceeded", n, err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}

	buf, kick := make([]byte, 64<<10), make(chan struct{})
	go func() {
		one := []byte("x")
		for range kick {
			peer.Write(one)
		}
	}()
	allocs := testing.AllocsPerRun(10, func() {
		kick <- struct{}{} // the read below waits for it
		if n, err := r.Read(buf); n != 1 || err != nil {
			t.Fatalf("read: %d, %v; want 1, nil", n, err)
		}
	})
	close(kick)
	if allocs > 0 {
		t.Errorf("a read allocates %.1f times, want none", allocs)
	}

	data := make([]byte, 4<<20)
	rand.Read(data)
	go func() {
		peer.Write(data)
		peer.CloseWrite()
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(h, struct{ io.Reader }{r}, buf)
	if err != nil || n != int64(len(data)) || !bytes.Equal(h.Sum(nil), sha256Of(data)) {
		t.Fatalf("read %d bytes (%v), want %d by SHA-256 and EOF", n, err, len(data))
	}
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("read after the FIN: %d, %v; want 0, io.EOF", n, err)
	}
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// rawWriterPair is a RawWriter on c, one end of a loopback pair, and
// peer, the other end.
func rawWriterPair(t *testing.T) (w *RawWriter, c, peer *net.TCPConn) {
	t.Helper()
	c, peer = loopback.Pair(t, loopback.Listener(t))
	w, err := NewRawWriter(c)
	if err != nil {
		t.Fatal(err)
	}
	return w, c, peer
}

// The kernel delays the ACK of a peer's FIN; ackNow sends it at once, from
// within the call: one segment more out of the socket as the call returns,
// and none for a second call with nothing left to acknowledge.
func TestAckNowAcknowledgesThePeersFIN(t *testing.T) {
	client, server := dialPair(loopback.Listener(t))
	defer client.Close()
	defer server.Close()
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := server.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer's FIN: %d, %v; want EOF", n, err)
	}
	var r, rc infoReader
	before := r.read(server)
	if !before.ok || before.state != stateCloseWait {
		t.Fatalf("server socket: %+v, want CLOSE-WAIT", before)
	}
	if c := rc.read(client); c.state != stateFinWait1 {
		t.Skipf("the delayed ACK went first (client in state %d): this test was descheduled 40 ms or more", c.state)
	}
	ackNow(server)
	after := r.read(server)
	ackNow(server)
	again := r.read(server)
	if after.segsOut != before.segsOut+1 || again.segsOut != after.segsOut {
		t.Errorf("segments out: %d before, %d after ackNow, %d after a second; want one more, then none",
			before.segsOut, after.segsOut, again.segsOut)
	}
}

package engine

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// A RawWriter writes both buffers whole and in order, waiting while the
// socket's send buffer is full (8 MiB is more than loopback's buffers
// hold, so it must wait), and its count is what the peer read.
func TestRawWriterWritesWholeAndWaits(t *testing.T) {
	ln := loopback.Listener(t)
	c, peer := loopback.Pair(t, ln)
	w, err := NewRawWriter(c)
	if err != nil {
		t.Fatal(err)
	}
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
	ln := loopback.Listener(t)
	c, _ := loopback.Pair(t, ln) // the peer reads nothing
	w, err := NewRawWriter(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 32<<20)
	n, err := w.Writev(big, nil)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n < 0 || n >= len(big) {
		t.Errorf("Writev past the deadline: %d bytes, %v; want some of %d, os.ErrDeadlineExceeded", n, err, len(big))
	}
}

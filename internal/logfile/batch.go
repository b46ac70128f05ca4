package logfile

import (
	"io"
	"sync"
	"time"
)

// Syncer is where a Batch writes: a file, stdout or stderr.
type Syncer interface {
	io.Writer
	Sync() error
}

// Batch holds lines for up to its wait and writes them to out together,
// one write for every line that came in meanwhile. Its timer runs only
// while lines wait, so an idle process never wakes for it, and a flush
// writes without syncing: a line the kernel holds survives the process,
// and only Sync (at shutdown) asks a file for its disk. A line that does
// not fit in what is left of the buffer writes the buffer out first; one
// longer than the buffer goes out alone. Its methods are safe for
// concurrent use; each line reaches out whole.
type Batch struct {
	out   Syncer
	wait  time.Duration
	size  int
	onErr func(error) // a timed flush failed: its lines are dropped

	mu      sync.Mutex
	buf     []byte
	timer   *time.Timer
	armed   bool // timer runs: buf holds lines
	stopped bool
}

// NewBatch writes to out lines at most wait old, at most size bytes of
// them held at once. onErr hears of timed flushes that failed (a write
// that fails in Write or Flush is returned there instead).
func NewBatch(out Syncer, wait time.Duration, size int, onErr func(error)) *Batch {
	return &Batch{out: out, wait: wait, size: size, onErr: onErr}
}

// Write holds p until the wait is over or the buffer fills; after Stop
// it writes p at once.
func (b *Batch) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > b.size {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	if b.stopped || len(p) > b.size {
		return b.out.Write(p)
	}
	b.buf = append(b.buf, p...)
	if !b.armed {
		b.armed = true
		if b.timer == nil {
			b.timer = time.AfterFunc(b.wait, b.timed)
		} else {
			b.timer.Reset(b.wait)
		}
	}
	return len(p), nil
}

// timed writes out what waited its time.
func (b *Batch) timed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.armed { // flushed since the timer fired
		return
	}
	if err := b.flushLocked(); err != nil && b.onErr != nil {
		b.onErr(err)
	}
}

// flushLocked writes buf out and disarms the timer. Lines whose write
// failed are dropped, as an unbuffered line's would be: holding them
// would grow without bound on a full disk or a closed pipe.
func (b *Batch) flushLocked() error {
	if b.armed {
		b.timer.Stop()
		b.armed = false
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.out.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Flush writes out what waits, at once.
func (b *Batch) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

// Sync writes out what waits and syncs out.
func (b *Batch) Sync() error {
	if err := b.Flush(); err != nil {
		return err
	}
	return b.out.Sync()
}

// Stop writes out what waits; later lines are written at once.
func (b *Batch) Stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	return b.flushLocked()
}

package logfile

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// sink records each write whole and tells of it on wrote.
type sink struct {
	mu     sync.Mutex
	writes []string
	syncs  int
	fail   error
	wrote  chan struct{}
}

func newSink() *sink { return &sink{wrote: make(chan struct{}, 100)} }

func (s *sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	s.writes = append(s.writes, string(p))
	s.wrote <- struct{}{}
	return len(p), nil
}

func (s *sink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	return nil
}

func (s *sink) got() ([]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.writes...), s.syncs
}

// write hands b each line, failing t on an error.
func write(t *testing.T, b *Batch, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if _, err := b.Write([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
}

// awaitWrite waits for the sink's next write, at most d.
func (s *sink) awaitWrite(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-s.wrote:
	case <-time.After(d):
		t.Fatalf("no write within %v", d)
	}
}

// Lines that come within the wait leave in one write, unsynced; the timer
// then stays quiet until a line waits again.
func TestBatchWritesTogetherAfterTheWait(t *testing.T) {
	s := newSink()
	b := NewBatch(s, 20*time.Millisecond, 1<<10, func(err error) { t.Errorf("timed flush: %v", err) })
	defer b.Stop()
	start := time.Now()
	write(t, b, "a\n", "b\n", "c\n")
	if w, _ := s.got(); len(w) != 0 {
		t.Fatalf("written before the wait: %q", w)
	}
	s.awaitWrite(t, 5*time.Second)
	if waited := time.Since(start); waited < 20*time.Millisecond {
		t.Errorf("written after %v, before the 20ms wait", waited)
	}
	if w, syncs := s.got(); len(w) != 1 || w[0] != "a\nb\nc\n" || syncs != 0 {
		t.Errorf("writes %q, %d syncs; want one write of the three lines, no sync", w, syncs)
	}
	b.mu.Lock()
	armed := b.armed
	b.mu.Unlock()
	if armed {
		t.Error("the timer is armed with nothing waiting")
	}
	write(t, b, "d\n")
	s.awaitWrite(t, 5*time.Second)
	if w, _ := s.got(); len(w) != 2 || w[1] != "d\n" {
		t.Errorf("writes %q, want the second line alone after its own wait", w)
	}
}

// A line that does not fit writes the buffer out first; one longer than
// the buffer goes out alone at once; Sync and Stop write what waits, and
// after Stop lines go out as they come.
func TestBatchFlushesOnFullSyncAndStop(t *testing.T) {
	s := newSink()
	b := NewBatch(s, time.Hour, 8, nil)
	write(t, b, "1234\n", "5678\n")
	if w, _ := s.got(); len(w) != 1 || w[0] != "1234\n" {
		t.Fatalf("writes %q, want the first line written when the second did not fit", w)
	}
	long := strings.Repeat("x", 20) + "\n"
	write(t, b, long)
	if w, _ := s.got(); len(w) != 3 || w[1] != "5678\n" || w[2] != long {
		t.Fatalf("writes %q, want the waiting line, then the long one alone", w)
	}
	write(t, b, "ab\n")
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	if w, syncs := s.got(); len(w) != 4 || w[3] != "ab\n" || syncs != 1 {
		t.Fatalf("writes %q, %d syncs; want the waiting line written and one sync", w, syncs)
	}
	write(t, b, "cd\n")
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	write(t, b, "ef\n")
	if w, _ := s.got(); len(w) != 6 || w[4] != "cd\n" || w[5] != "ef\n" {
		t.Fatalf("writes %q, want the waiting line at Stop, then each as it comes", w)
	}
}

// A timed flush that fails is reported and its lines dropped, not held
// to grow; the next lines are written as usual.
func TestBatchReportsAFailedTimedFlush(t *testing.T) {
	s := newSink()
	s.fail = errors.New("no space left on device")
	errs := make(chan error, 1)
	b := NewBatch(s, time.Millisecond, 1<<10, func(err error) { errs <- err })
	defer b.Stop()
	write(t, b, "lost\n")
	select {
	case err := <-errs:
		if !errors.Is(err, s.fail) {
			t.Errorf("reported %v, want %v", err, s.fail)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed timed flush was not reported")
	}
	s.mu.Lock()
	s.fail = nil
	s.mu.Unlock()
	write(t, b, "kept\n")
	s.awaitWrite(t, 5*time.Second)
	if w, _ := s.got(); len(w) != 1 || w[0] != "kept\n" {
		t.Errorf("writes %q, want only the line after the failure", w)
	}
}

// Lines from many writers at once all arrive whole and once.
func TestBatchConcurrentWritersLoseNothing(t *testing.T) {
	s := newSink()
	s.wrote = make(chan struct{}, 1<<12)
	b := NewBatch(s, time.Millisecond, 64, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				line := []byte(strings.Repeat(string(rune('a'+w)), 1+i%9) + "\n")
				if _, err := b.Write(line); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	w, _ := s.got()
	all := []byte(strings.Join(w, ""))
	lines := bytes.Split(bytes.TrimSuffix(all, []byte("\n")), []byte("\n"))
	if len(lines) != 800 {
		t.Fatalf("%d lines arrived, want 800", len(lines))
	}
	for _, l := range lines {
		if len(bytes.Trim(l, string(l[:1]))) != 0 {
			t.Fatalf("a line arrived split or mixed: %q", l)
		}
	}
}

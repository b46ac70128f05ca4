package demo

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/closeproxy/closeproxy/engine"
)

// recorder keeps a copy of every teardown record, in the order they were
// written (not the order of their ids).
type recorder struct {
	mu     sync.Mutex
	recs   []*engine.Teardown
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

// add is the proxy's teardown hook: it must not block.
func (r *recorder) add(td *engine.Teardown) {
	cp := *td
	r.mu.Lock()
	r.recs = append(r.recs, &cp)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []*engine.Teardown {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*engine.Teardown(nil), r.recs...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.recs)
}

// wait returns once n records arrived, or fails after timeout.
func (r *recorder) wait(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for r.count() < n {
		select {
		case <-r.signal:
		case <-deadline.C:
			return fmt.Errorf("%d of %d teardown records after %s", r.count(), n, timeout)
		case <-ctx.Done():
			return fmt.Errorf("wait for teardown records: %w", ctx.Err())
		}
	}
	return nil
}

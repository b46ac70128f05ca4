package proxy

import (
	"runtime/debug"
	"sync/atomic"
)

// trimFloor is the peak of live sessions below which memory is left to the
// Go runtime: a few hundred sessions' stacks and buffers are not worth a
// forced collection.
const trimFloor = 1024

// trimmer gives memory back to the system after a peak of sessions has
// drained. The Go runtime frees a drained heap only at its next collection,
// which an idle process runs every two minutes, and returns pages slowly:
// without this, a sidecar that once held ten thousand connections keeps
// their memory long after they ended.
type trimmer struct {
	live atomic.Int64 // sessions running now
	peak atomic.Int64 // most live since the last trim
	high atomic.Int64 // most live since live was last 0
}

// started counts a session in.
func (t *trimmer) started() {
	n := t.live.Add(1)
	raise(&t.peak, n)
	raise(&t.high, n)
}

func raise(v *atomic.Int64, n int64) {
	for {
		p := v.Load()
		if n <= p || v.CompareAndSwap(p, n) {
			return
		}
	}
}

// ended counts a session out. When live sessions fell to a quarter of a
// peak of at least trimFloor, or to none after such a peak, the session
// that saw it returns memory to the system (a forced collection, on its
// own goroutine, which ends next).
func (t *trimmer) ended() {
	n := t.live.Add(-1)
	if p := t.peak.Load(); p >= trimFloor && n <= p/4 && t.peak.CompareAndSwap(p, n) {
		debug.FreeOSMemory()
		return
	}
	if h := t.high.Load(); n == 0 && h >= trimFloor && t.high.CompareAndSwap(h, 0) {
		debug.FreeOSMemory()
	}
}

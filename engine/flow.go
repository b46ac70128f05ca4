package engine

import (
	"sync/atomic"
	"time"
)

// activity is what a leg's copiers tell the executor while they run: when
// bytes last moved each way, and the longest pause of the peer. Copiers
// write it; the executor only reads it. Times are nanoseconds since the
// session started.
type activity struct {
	lastIn   atomic.Int64 // the last bytes read from the peer
	lastOut  atomic.Int64 // the last bytes written to the peer
	maxPause atomic.Int64 // the longest the peer kept the proxy waiting for its next bytes
	// watch is set while the proxy's FIN went first and its ACK was not
	// seen yet: the copier reading the peer then looks at the socket's
	// state after each read, so that a peer that answers before it closes
	// is seen to have acknowledged the FIN (FIN-WAIT-2) before its own.
	watch  atomic.Bool
	sawFW2 atomic.Bool
	// fw1SegsIn is one more than the segments received as of the latest
	// look that saw the leg still in FIN-WAIT-1 (0: none): a single
	// segment after it that ends FIN-WAIT-1 carried the peer's FIN and the
	// ACK of ours.
	fw1SegsIn atomic.Uint64
	// finFirst: the peer's FIN was already in when the proxy began
	// answering bytes it had read from the peer: whatever the proxy sent
	// after, the peer closed before it (the kernel says so; when the
	// copier reads the FIN can be later, on a busy host much later).
	finFirst atomic.Bool
	// reads is what the copier's reads from the socket tell, in one word
	// (a leg keeps its size class): readResetBit, a read met the peer's
	// reset, taking the socket's pending error, which closedBy would look
	// for on a leg whose FIN went; inReadBit, a read is under way, and
	// until it ends a reset it met may not be noted yet.
	reads atomic.Uint32
}

const (
	readResetBit = 1 << iota
	inReadBit
)

func (a *activity) readReset() bool { return a.reads.Load()&readResetBit != 0 }

func (a *activity) inRead() bool { return a.reads.Load()&inReadBit != 0 }

// flow is one running direction as the executor sees it: its two legs'
// activity and whether it is writing (then the source's peer is waiting on
// the proxy's buffers, not silent).
type flow struct {
	start    time.Time
	src, dst *activity // dst is nil for a sink: the bytes go nowhere
	srcLeg   *leg
	dstLeg   *leg
	busy     atomic.Bool
	waitFrom int64 // when the copier last became ready to read; its own
	// eofAt is when the copier read its source's EOF (0: it did not); the
	// executor reads it once the copier reported.
	eofAt int64
}

// eof notes that the source's EOF was read now. Its time, not the time the
// executor handles the report, is when the peer's FIN came in: bytes the
// other direction relays meanwhile did not come before it.
func (f *flow) eof() {
	if f != nil {
		f.eofAt = f.now()
	}
}

// reading notes that a read from the source begins (true) or ended.
func (f *flow) reading(on bool) {
	switch {
	case f == nil:
	case on:
		f.src.reads.Or(inReadBit)
	default:
		f.src.reads.And(^uint32(inReadBit))
	}
}

// resetRead notes that a read from the source met its peer's reset.
func (f *flow) resetRead() {
	if f != nil {
		f.src.reads.Or(readResetBit)
	}
}

func (f *flow) now() int64 { return int64(time.Since(f.start)) }

// read notes bytes read from the source: their time, and the pause that
// preceded them, counted from when the proxy was ready for them and had
// last sent the peer something.
func (f *flow) read() {
	if f == nil {
		return
	}
	t := f.now()
	from := max(f.waitFrom, f.src.lastIn.Load(), f.src.lastOut.Load())
	if p := t - from; p > f.src.maxPause.Load() {
		f.src.maxPause.Store(p)
	}
	f.src.lastIn.Store(t)
	if f.src.watch.Load() && f.srcLeg != nil {
		f.srcLeg.lookForFinWait2()
	}
}

// writing notes that the copier starts writing to the destination. The
// bytes are stamped now, before the write: an answer to them can only be
// read after it, so it is always stamped later, however the goroutines
// are scheduled.
func (f *flow) writing() { f.writingFrom(false) }

// writingFrom is writing, told whether the bytes were read once the
// source's FIN (or reset) was in, as a loop knows from its events: then
// the source's stream has ended, and no bet is left to look for
// (lookForFINFirst).
func (f *flow) writingFrom(srcEnded bool) {
	if f == nil {
		return
	}
	f.busy.Store(true)
	if f.dst != nil {
		if !srcEnded {
			f.lookForFINFirst()
		}
		f.dst.lastOut.Store(f.now())
	}
}

// lookForFINFirst reads the destination's state (TCP_INFO) at the first
// write after bytes read from its peer — the start of an answer, once per
// turn of an exchange — and notes a FIN that came before it, for
// doneReading: only where that is asked (doneAsked), so a request on its
// way to the backend reads nothing. Nor does an answer whose source had
// ended when it was read (writingFrom): doneReading only ever decides
// whether the source's leg may be reset while its peer might still send,
// and a peer whose FIN is in sends nothing more; nothing that verdict
// decides can cut a stream. That is the usual short connection, a
// backend that answers and closes: one system call less each.
func (f *flow) lookForFINFirst() {
	if f.dstLeg == nil || !f.dstLeg.doneAsked() || f.dst.finFirst.Load() || f.dst.lastIn.Load() <= f.dst.lastOut.Load() {
		return
	}
	if lookHook != nil {
		lookHook()
	}
	if t := f.dstLeg.tcp(); t.ok && peerFINState(t.state) {
		f.dst.finFirst.Store(true)
	}
}

// wrote notes that a write to the destination finished.
func (f *flow) wrote() {
	if f == nil {
		return
	}
	f.busy.Store(false)
	f.waitFrom = f.now()
}

// lookHook, when set (tests), is called as lookForFINFirst reads the
// destination's state.
var lookHook func()

package engine

import (
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TCP states as the kernel numbers them in tcp_info.
const (
	stateEstablished = unix.BPF_TCP_ESTABLISHED
	stateFinWait1    = unix.BPF_TCP_FIN_WAIT1
	stateFinWait2    = unix.BPF_TCP_FIN_WAIT2
	stateTimeWait    = unix.BPF_TCP_TIME_WAIT
	stateClose       = unix.BPF_TCP_CLOSE
	stateCloseWait   = unix.BPF_TCP_CLOSE_WAIT
	stateLastAck     = unix.BPF_TCP_LAST_ACK
	stateClosing     = unix.BPF_TCP_CLOSING
)

// tcpCounts is what the engine uses of a socket's TCP_INFO. The kernel
// reads the state before it takes the socket's lock for the counters, so
// a segment processed in between shows in the counters but not yet in the
// state: finObs reads twice where that matters.
type tcpCounts struct {
	ok                   bool
	state                uint8
	received, acked      uint64 // payload bytes (and a FIN) received / acknowledged by the peer
	segsIn, dataSegsIn   uint32
	segsOut, dataSegsOut uint32
	unacked, notsent     uint32 // segments in flight; bytes not yet sent
	rtt                  time.Duration
}

// infoReader reads one socket's TCP_INFO. The struct read into comes from a
// pool, so a read allocates nothing (unix.GetsockoptTCPInfo allocates one
// per call, and a closure over one escapes).
type infoReader struct {
	raw syscall.RawConn
}

type infoBuf struct {
	info unix.TCPInfo
	err  syscall.Errno
	get  func(fd uintptr) // b.getsockopt, bound once
}

var infoBufs = sync.Pool{New: func() any {
	b := new(infoBuf)
	b.get = b.getsockopt
	return b
}}

func (b *infoBuf) getsockopt(fd uintptr) {
	n := uint32(unsafe.Sizeof(b.info))
	_, _, b.err = unix.RawSyscall6(unix.SYS_GETSOCKOPT, fd, unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&b.info)), uintptr(unsafe.Pointer(&n)), 0)
}

func (r *infoReader) read(c syscall.Conn) tcpCounts {
	if r.raw == nil {
		raw, err := c.SyscallConn()
		if err != nil {
			return tcpCounts{}
		}
		r.raw = raw
	}
	b := infoBufs.Get().(*infoBuf)
	defer infoBufs.Put(b)
	if err := r.raw.Control(b.get); err != nil || b.err != 0 {
		return tcpCounts{}
	}
	i := &b.info
	return tcpCounts{
		ok: true, state: i.State, received: i.Bytes_received, acked: i.Bytes_acked,
		segsIn: i.Segs_in, dataSegsIn: i.Data_segs_in, segsOut: i.Segs_out, dataSegsOut: i.Data_segs_out,
		unacked: i.Unacked, notsent: i.Notsent_bytes, rtt: time.Duration(i.Rtt) * time.Microsecond,
	}
}

// allSentAcked says the peer acknowledged every byte sent, and nothing
// waits to be sent.
func (t tcpCounts) allSentAcked() bool { return t.ok && t.unacked == 0 && t.notsent == 0 }

// onlyFINOwed reports a socket whose peer's FIN is in and nothing since
// (CLOSE-WAIT), every byte sent on it acknowledged: the proxy owes it
// its FIN and nothing more.
func (t tcpCounts) onlyFINOwed() bool { return t.allSentAcked() && t.state == stateCloseWait }

// finAcked: the proxy's FIN is acknowledged and the peer's not in
// (FIN-WAIT-2).
func (t tcpCounts) finAcked() bool { return t.ok && t.state == stateFinWait2 }

// progress is a kernel count that grows whenever bytes move on the socket
// in either direction: bytes received plus bytes acknowledged by the peer.
func (t tcpCounts) progress() uint64 { return t.received + t.acked }

// queue reads one of the socket's queue sizes with an ioctl.
func queue(c syscall.Conn, req uint, name string) (int, error) {
	var n int
	err := onSocket(c, "ioctl "+name, func(fd uintptr) (err error) {
		n, err = rawIoctlInt(int(fd), req)
		return err
	})
	return n, err
}

// onSocket runs op on c's descriptor and reports an error op returns as
// the system call named call failing (os.SyscallError).
func onSocket(c syscall.Conn, call string, op func(fd uintptr) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := raw.Control(func(fd uintptr) { opErr = op(fd) }); err != nil {
		return err
	}
	if opErr != nil {
		return os.NewSyscallError(call, opErr)
	}
	return nil
}

// ackNow acknowledges at once what c received (TCP_QUICKACK): the peer's
// FIN, when the proxy's own FIN did not follow within ackDelay. The
// kernel would hold that ACK back (a delayed ACK, 40 ms or more) and send
// it from a timer, possibly on another CPU; if the proxy's FIN leaves about
// then, the stale pure ACK can arrive after it, the peer's TIME-WAIT
// answers the old segment, the proxy's host (its socket gone) answers
// that with an RST, and the RST ends the peer's TIME-WAIT (Linux's
// default, net.ipv4.tcp_rfc1337 = 0): the record said TIME-WAIT on the
// peer and the kernel holds none. Seen on loopback with busy CPUs, where
// the proxy's FIN to a client comes a grace (about 50 ms) after the
// client's. Best effort: an error only means the ACK stays delayed.
func ackNow(c syscall.Conn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) { _ = rawQuickAck(int(fd)) })
}

// sendQueue reports the bytes sent on c that the peer has not acknowledged
// yet (SIOCOUTQ). A safe reset waits for it to reach zero.
func sendQueue(c syscall.Conn) (int, error) { return queue(c, unix.SIOCOUTQ, "SIOCOUTQ") }

// recvQueue reports the bytes the peer sent that the proxy has not read
// yet (SIOCINQ): a peer whose bytes wait there is not silent.
func recvQueue(c syscall.Conn) (int, error) { return queue(c, unix.SIOCINQ, "SIOCINQ") }

// heldInKernel reports the memory the kernel holds for what c received
// and the proxy did not read (SO_MEMINFO's rmem_alloc): the receive queue,
// and the out-of-order queue, where a peer's bytes that came after one of
// its segments was lost wait, unreadable and uncounted by SIOCINQ and
// TCP_INFO's bytes_received, until that segment is sent again.
func heldInKernel(c syscall.Conn) (int, error) {
	var mem [16]uint32 // SK_MEMINFO_VARS and room to spare; rmem_alloc first
	err := onSocket(c, "getsockopt SO_MEMINFO", func(fd uintptr) error {
		size := uint32(unsafe.Sizeof(mem))
		if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&mem[0])), uintptr(unsafe.Pointer(&size)), 0); e != 0 {
			return e
		}
		return nil
	})
	return int(mem[0]), err
}

// Unread reports that bytes c's peer sent wait unread in its receive
// queue (SIOCINQ): a connection that looks idle in the proxy is not when
// a request came to the kernel meanwhile.
func Unread(c syscall.Conn) bool {
	q, err := recvQueue(c)
	return err == nil && q > 0
}

// Unacked reports that bytes sent on c wait for its peer's acknowledgement
// (SIOCOUTQ): its kernel has not taken them all yet.
func Unacked(c syscall.Conn) bool {
	q, err := sendQueue(c)
	return err == nil && q > 0
}

// SendQueue is what was sent on c and its peer has not acknowledged yet
// (SIOCOUTQ), -1 when it cannot be read: a queue that shrank between two
// readings is a peer taking bytes while the proxy wrote none.
func SendQueue(c syscall.Conn) int {
	q, err := sendQueue(c)
	if err != nil {
		return -1
	}
	return q
}

// ResetByPeer reports that the kernel already closed c because the peer
// reset it.
func ResetByPeer(c syscall.Conn) bool {
	_, reset := peerEnd(c)
	return reset
}

// PeerEnded reports that c's peer ended its side of the connection: its
// FIN came or its reset closed the socket.
func PeerEnded(c syscall.Conn) bool {
	fin, reset := peerEnd(c)
	return fin || reset
}

// peerEnd is PeerEndFD for a connection the proxy has not closed yet:
// false, false when its state cannot be read.
func peerEnd(c syscall.Conn) (fin, reset bool) {
	var r infoReader
	t := r.read(c)
	return t.ok && t.state == stateCloseWait, t.ok && t.state == stateClose
}

// resetByPeerFD is ResetByPeer for a bare socket descriptor.
func resetByPeerFD(fd int) bool {
	_, reset, _ := PeerEndFD(fd)
	return reset
}

// PeerEndFD reads how the peer of a socket the proxy has not closed yet
// ended it, if it did: its FIN came (CLOSE-WAIT: fin), or its reset
// closed the socket (reset); ok is false when the state cannot be read.
func PeerEndFD(fd int) (fin, reset, ok bool) {
	b := infoBufs.Get().(*infoBuf)
	defer infoBufs.Put(b)
	b.getsockopt(uintptr(fd))
	if b.err != 0 {
		return false, false, false
	}
	return b.info.State == stateCloseWait, b.info.State == stateClose, true
}

// readSoFar is the kernel's count of what was read off c so far, in
// TCP_INFO's bytes_received terms: the payload received less what waits
// unread (SIOCINQ). It is known (ok) while the peer's FIN has not come
// (a FIN counts one in bytes_received) and no byte arrived between the
// readings.
func readSoFar(c syscall.Conn) (read uint64, ok bool) {
	var r infoReader
	for range 3 {
		before := r.read(c)
		if !before.ok || !noFINYet(before.state) {
			return 0, false
		}
		q, err := recvQueue(c)
		if err != nil {
			return 0, false
		}
		if after := r.read(c); after.ok && after.received == before.received {
			return before.received - uint64(q), true
		}
	}
	return 0, false
}

// noFINYet says whether a socket in state s has not received its peer's
// FIN.
func noFINYet(s uint8) bool {
	return s == stateEstablished || s == stateFinWait1 || s == stateFinWait2
}

// resetWithoutFIN reports that the kernel closed c on its peer's reset
// with no FIN before it: c is CLOSE and it received no more than the
// bytes read off it (read, in readSoFar's terms), where a FIN would
// count one more.
func resetWithoutFIN(c syscall.Conn, read uint64) bool {
	var r infoReader
	t := r.read(c)
	return t.ok && t.state == stateClose && t.received == read
}

// pendingError reports that c holds an error not yet returned by a call
// on it (SO_ERROR, which reading clears): a reset nothing has read yet.
func pendingError(c syscall.Conn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	v := 0
	if raw.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) }) != nil {
		return false
	}
	return err == nil && v != 0
}

//go:build !linux

package engine

import (
	"errors"
	"syscall"
	"time"
)

var errUnsupported = errors.New("unsupported on this platform")

// tcpCounts stands in for TCP_INFO, not available here: ok is always
// false, so timers see no kernel progress and the order of FINs is
// unknown.
type tcpCounts struct {
	ok    bool
	state uint8
	rtt   time.Duration
}

func (t tcpCounts) progress() uint64 { return 0 }

func (t tcpCounts) allSentAcked() bool { return false }

func (t tcpCounts) onlyFINOwed() bool { return false }

func (t tcpCounts) finAcked() bool { return false }

type infoReader struct{ raw any }

func (*infoReader) read(syscall.Conn) tcpCounts { return tcpCounts{} }

// sendQueue is not available here: a safe reset then always falls back to
// a FIN, which never destroys undelivered bytes.
func sendQueue(syscall.Conn) (int, error) { return 0, errUnsupported }

func recvQueue(syscall.Conn) (int, error) { return 0, errUnsupported }

func heldInKernel(syscall.Conn) (int, error) { return 0, errUnsupported }

// ackNow is a Linux refinement (TCP_QUICKACK); elsewhere the ACK of a
// peer's FIN may stay delayed.
func ackNow(syscall.Conn) {}

// Unacked is not available here: an answer is not told early by it.
func Unacked(syscall.Conn) bool { return false }

// SendQueue is not available here: -1.
func SendQueue(syscall.Conn) int { return -1 }

// Unread is not available here: a connection idle in the proxy is taken
// for idle.
func Unread(syscall.Conn) bool { return false }

// ResetByPeer is not available here.
func ResetByPeer(syscall.Conn) bool { return false }

func resetByPeerFD(int) bool { return false }

// PeerEnded is not available here.
func PeerEnded(syscall.Conn) bool { return false }

// PeerEndFD is not available here: ok is false.
func PeerEndFD(int) (fin, reset, ok bool) { return false, false, false }

func pendingError(syscall.Conn) bool { return false }

func readSoFar(syscall.Conn) (uint64, bool) { return 0, false }

func resetWithoutFIN(syscall.Conn, uint64) bool { return false }

func finOrder(finObs) order          { return orderUnknown }
func peerFINState(uint8) bool        { return false }
func finWait1(uint8) bool            { return false }
func finWait2(uint8) bool            { return false }
func closedState(uint8) bool         { return false }
func (*finObs) eofDecides() bool     { return false }
func (l *leg) lookForFinWait2()      {}
func (l *leg) watchFinWait2()        {}
func (*leg) baseBeforePeerFIN() bool { return false }

package pool

// liveness is what a non-blocking peek found on an idle connection.
type liveness int

const (
	alive          liveness = iota // nothing to read: the connection is open and quiet
	peerClosed                     // EOF: the backend closed it (keep-alive timeout, restart)
	unexpectedData                 // bytes nobody asked for: the stream is out of step
	broken                         // reset or another error
)

func (l liveness) String() string {
	switch l {
	case alive:
		return "alive"
	case peerClosed:
		return "peer_closed"
	case unexpectedData:
		return "unexpected_data"
	default:
		return "broken"
	}
}

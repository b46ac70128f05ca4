package loopback

import "github.com/closeproxy/closeproxy/procnet"

// Overflow marks the namespace's TCPTimeWaitOverflow: a test that needs
// TIME-WAIT sockets of its own in the host's namespace shares the table
// with every test run beside it, and where the table is full
// (tcp_max_tw_buckets) the kernel closes sockets instead of keeping them.
// Such a test marks the counter before its sockets close and skips, not
// fails, when what it misses is TIME-WAIT sockets and the kernel
// destroyed at least as many since.
type Overflow struct {
	at int
	ok bool
}

// MarkOverflow reads the counter now.
func MarkOverflow() Overflow {
	n, err := procnet.ReadTimeWaitOverflow()
	return Overflow{at: n, ok: err == nil}
}

// Destroyed is how many TIME-WAIT sockets the kernel destroyed since the
// mark, any process's; 0 where the counter cannot be read.
func (o Overflow) Destroyed() int {
	n, err := procnet.ReadTimeWaitOverflow()
	if !o.ok || err != nil {
		return 0
	}
	return n - o.at
}

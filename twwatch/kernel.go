package twwatch

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// Kernel is where the figures are read from. The zero value reads this
// host: the files under /proc and sock_diag of the caller's network
// namespace. Tests fabricate a host by setting the functions.
//
// The readers return a file's own error as is (an *fs.PathError names
// the file) and wrap a parsing error with the file's name.
type Kernel struct {
	// ReadFile reads one file; nil: os.ReadFile.
	ReadFile func(name string) ([]byte, error)
	// ListSockets lists the TCP sockets in any of states that filter
	// matches, or all of them when filter is nil; nil: sockdiag. The
	// callers match each socket themselves, so a fake may ignore filter.
	ListSockets func(filter *sockdiag.Filter, states ...sockdiag.State) ([]sockdiag.Socket, error)
}

// File reads one kernel file.
func (k Kernel) File(name string) ([]byte, error) {
	if k.ReadFile != nil {
		return k.ReadFile(name)
	}
	return os.ReadFile(name)
}

// Sockets lists TCP sockets in any of states, those filter matches when it
// is not nil.
func (k Kernel) Sockets(filter *sockdiag.Filter, states ...sockdiag.State) ([]sockdiag.Socket, error) {
	switch {
	case k.ListSockets != nil:
		return k.ListSockets(filter, states...)
	case filter != nil:
		return sockdiag.ListMatching(filter, states...)
	}
	return sockdiag.List(states...)
}

// read reads name and parses it.
func (k Kernel) read(name string, parse func([]byte) (int, error)) (int, error) {
	b, err := k.File(name)
	if err != nil {
		return 0, err
	}
	v, err := parse(b)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", name, err)
	}
	return v, nil
}

// Int reads a file holding one integer, such as a sysctl under
// /proc/sys.
func (k Kernel) Int(name string) (int, error) {
	return k.read(name, procnet.Int)
}

// HostTimeWait returns this namespace's TIME-WAIT sockets ("tw" in
// /proc/net/sockstat).
func (k Kernel) HostTimeWait() (int, error) {
	return k.read(procnet.SockstatPath, procnet.SockstatTW)
}

// MaxTWBuckets returns net.ipv4.tcp_max_tw_buckets.
func (k Kernel) MaxTWBuckets() (int, error) {
	return k.Int(procnet.MaxTWBucketsPath)
}

// Overflow returns TcpExt TCPTimeWaitOverflow (/proc/net/netstat): how
// many TIME-WAIT sockets the kernel could not keep since boot.
func (k Kernel) Overflow() (int, error) {
	return k.read(procnet.NetstatPath, func(b []byte) (int, error) {
		return procnet.NetstatField(b, "TcpExt", "TCPTimeWaitOverflow")
	})
}

// PortRange returns net.ipv4.ip_local_port_range.
func (k Kernel) PortRange() (lo, hi int, err error) {
	b, err := k.File(procnet.PortRangePath)
	if err != nil {
		return 0, 0, err
	}
	if lo, hi, err = procnet.PortRange(b); err != nil {
		return 0, 0, fmt.Errorf("parse %s: %w", procnet.PortRangePath, err)
	}
	return lo, hi, nil
}

// ReservedPorts returns net.ipv4.ip_local_reserved_ports as read (list)
// and how many of its ports lie within lo..hi.
func (k Kernel) ReservedPorts(lo, hi int) (n int, list string, err error) {
	b, err := k.File(procnet.ReservedPath)
	if err != nil {
		return 0, "", err
	}
	list = strings.TrimSpace(string(b))
	if n, err = procnet.ReservedInRange(list, lo, hi); err != nil {
		return 0, "", fmt.Errorf("parse %s: %w", procnet.ReservedPath, err)
	}
	return n, list, nil
}

// UsablePorts returns how many local ports connect() may pick toward one
// destination: the port range less the reserved ports inside it (all of
// the range when the reserved ports cannot be read).
func (k Kernel) UsablePorts() (int, error) {
	lo, hi, err := k.PortRange()
	if err != nil {
		return 0, err
	}
	reserved, _, err := k.ReservedPorts(lo, hi)
	if err != nil {
		reserved = 0
	}
	return max(hi-lo+1-reserved, 0), nil
}

// Read reads every figure, the proxy's own by t (nil: no targets, no
// per-leg figures). It never fails as a whole: what it could not read is
// in the figures' errors and, joined, in the Sample's Err.
func (k Kernel) Read(t *Targets) Sample {
	s := Sample{
		Host:         figure(k.HostTimeWait()),
		MaxTWBuckets: figure(k.MaxTWBuckets()),
		Overflow:     figure(k.Overflow()),
		UsablePorts:  figure(k.UsablePorts()),
	}
	var listErr error
	if f := t.filter(); f != nil {
		socks, err := k.Sockets(f, sockdiag.TimeWait)
		if err != nil {
			listErr = fmt.Errorf("list TIME-WAIT sockets: %w", err)
			t.unread(&s, listErr)
		} else {
			t.count(&s, socks)
		}
	}
	s.Err = errors.Join(s.Host.Err, s.MaxTWBuckets.Err, s.Overflow.Err, s.UsablePorts.Err, listErr)
	return s
}

package doctor

import (
	"fmt"
	"net/netip"
	"strconv"

	"github.com/closeproxy/closeproxy/procnet"
)

// timeWaitSeconds is how long Linux keeps TIME-WAIT (TCP_TIMEWAIT_LEN):
// fixed in the kernel, whatever tcp_fin_timeout says.
const timeWaitSeconds = 60

// figure is one numeric reading; ok is false when it could not be read.
type figure struct {
	v  int
	ok bool
}

// kernel is what Collect read of the settings, typed for the analysis and
// explained for the report.
type kernel struct {
	portLo, portHi int
	usable         int    // ephemeral ports less reserved ones; 0 when unknown
	reserved       int    // reserved ports inside the range
	reservedList   string // ip_local_reserved_ports as read
	twReuse        figure
	timestamps     figure
	maxTW          figure
	overflow       figure
	finTimeout     figure
	somaxconn      figure
	nofileSoft     uint64
	nofileHard     uint64
	nofileOK       bool

	settings []Setting
	unread   []string
}

const (
	procIPv4    = "/proc/sys/net/ipv4/"
	pathNetstat = procnet.NetstatPath
)

// reuses reports whether connect() on this host takes a port whose
// 4-tuple toward addr is in TIME-WAIT once that is older than 1 s:
// tcp_tw_reuse 1, or 2 toward loopback, with TCP timestamps on.
func (k *kernel) reuses(addr netip.Addr) bool {
	if !k.twReuse.ok || !k.timestamps.ok || k.timestamps.v == 0 {
		return false
	}
	return k.twReuse.v == 1 || k.twReuse.v == 2 && addr.Unmap().IsLoopback()
}

// readKernel reads every setting in the order the report lists them. The
// figures twwatch samples for auto and the metrics (the port range and its
// reserved ports, tcp_max_tw_buckets, TCPTimeWaitOverflow) are read with
// its readers, so the three report the same.
func readKernel(src source) *kernel {
	k := &kernel{}
	k.readPortRange(src)
	k.readReserved(src)
	k.twReuse = k.readInt(src, "net.ipv4.tcp_tw_reuse", procIPv4+"tcp_tw_reuse", meansTWReuse)
	k.timestamps = k.readInt(src, "net.ipv4.tcp_timestamps", procIPv4+"tcp_timestamps", meansTimestamps)
	v, err := src.kernel.MaxTWBuckets()
	k.maxTW = k.setting(src, "net.ipv4.tcp_max_tw_buckets", v, err, meansMaxTW)
	v, err = src.kernel.Overflow()
	k.overflow = k.setting(src, "TcpExt.TCPTimeWaitOverflow", v, err, meansOverflow)
	k.finTimeout = k.readInt(src, "net.ipv4.tcp_fin_timeout", procIPv4+"tcp_fin_timeout", meansFinTimeout)
	k.somaxconn = k.readInt(src, "net.core.somaxconn", "/proc/sys/net/core/somaxconn", meansSomaxconn)
	k.readNoFile(src)
	return k
}

// add records a setting; a reading error also goes to the unread list.
func (k *kernel) add(name, value string, err error, goos, means string) {
	s := Setting{Name: name, Value: value, Means: means}
	if err != nil {
		s.Error = unreadable(err, goos)
		k.unread = append(k.unread, name+": "+s.Error)
	}
	k.settings = append(k.settings, s)
}

func (k *kernel) readInt(src source, name, path string, means func(int) string) figure {
	v, err := src.kernel.Int(path)
	return k.setting(src, name, v, err, means)
}

// setting records a numeric setting as read, explained by means (given -1
// when it could not be read).
func (k *kernel) setting(src source, name string, v int, err error, means func(int) string) figure {
	if err != nil {
		k.add(name, "", err, src.goos, means(-1))
		return figure{}
	}
	k.add(name, strconv.Itoa(v), nil, src.goos, means(v))
	return figure{v: v, ok: true}
}

func (k *kernel) readPortRange(src source) {
	const name = "net.ipv4.ip_local_port_range"
	var err error
	k.portLo, k.portHi, err = src.kernel.PortRange()
	if err != nil {
		k.portLo, k.portHi = 0, 0
		k.add(name, "", err, src.goos, "connect() picks its local ports from this range")
		return
	}
	k.usable = k.portHi - k.portLo + 1
	k.add(name, fmt.Sprintf("%d %d", k.portLo, k.portHi), nil, src.goos, "")
}

// readReserved subtracts ip_local_reserved_ports inside the range from the
// usable ports, then explains the range with the final figure.
func (k *kernel) readReserved(src source) {
	const name = "net.ipv4.ip_local_reserved_ports"
	reserved, value, err := src.kernel.ReservedPorts(k.portLo, k.portHi)
	if err == nil {
		k.reserved = reserved
		k.usable = max(k.usable-k.reserved, 0)
		k.reservedList = value
	}
	if k.usable > 0 {
		k.settings[len(k.settings)-1].Means = meansPortRange(k.usable, k.reserved)
	}
	k.add(name, value, err, src.goos, meansReserved(value, k.reserved, err == nil))
}

func (k *kernel) readNoFile(src source) {
	soft, hard, err := src.noFile()
	if err != nil {
		k.add("RLIMIT_NOFILE", "", err, src.goos, meansNoFile(0))
		return
	}
	k.nofileSoft, k.nofileHard, k.nofileOK = soft, hard, true
	k.add("RLIMIT_NOFILE", fmt.Sprintf("%s soft, %s hard", limitString(soft), limitString(hard)), nil, src.goos, meansNoFile(hard))
}

func limitString(v uint64) string {
	if v >= 1<<62 {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

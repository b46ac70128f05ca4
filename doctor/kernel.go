package doctor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

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
	pathNetstat = "/proc/net/netstat"
)

// readKernel reads every setting in the order the report lists them.
func readKernel(src source) *kernel {
	k := &kernel{}
	k.readPortRange(src)
	k.readReserved(src)
	k.twReuse = k.readInt(src, "net.ipv4.tcp_tw_reuse", procIPv4+"tcp_tw_reuse", meansTWReuse)
	k.timestamps = k.readInt(src, "net.ipv4.tcp_timestamps", procIPv4+"tcp_timestamps", meansTimestamps)
	k.maxTW = k.readInt(src, "net.ipv4.tcp_max_tw_buckets", procIPv4+"tcp_max_tw_buckets", meansMaxTW)
	k.readOverflow(src)
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
	b, err := src.readFile(path)
	if err != nil {
		k.add(name, "", err, src.goos, means(-1))
		return figure{}
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		k.add(name, "", fmt.Errorf("parse %s: %w", path, err), src.goos, means(-1))
		return figure{}
	}
	k.add(name, strconv.Itoa(v), nil, src.goos, means(v))
	return figure{v: v, ok: true}
}

func (k *kernel) readPortRange(src source) {
	const name = "net.ipv4.ip_local_port_range"
	b, err := src.readFile(procIPv4 + "ip_local_port_range")
	if err == nil {
		k.portLo, k.portHi, err = procnet.PortRange(b)
	}
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
	b, err := src.readFile(procIPv4 + "ip_local_reserved_ports")
	if err == nil {
		k.reserved, err = reservedInRange(strings.TrimSpace(string(b)), k.portLo, k.portHi)
	}
	value := strings.TrimSpace(string(b))
	if err != nil {
		value = ""
	} else {
		k.usable = max(k.usable-k.reserved, 0)
		k.reservedList = value
	}
	if k.usable > 0 {
		k.settings[len(k.settings)-1].Means = meansPortRange(k.usable, k.reserved)
	}
	k.add(name, value, err, src.goos, meansReserved(value, k.reserved, err == nil))
}

// reservedInRange counts the ports of a list like "8080,9000-9010" that lie
// within lo..hi.
func reservedInRange(list string, lo, hi int) (int, error) {
	n := 0
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		a, b, isRange := strings.Cut(item, "-")
		from, err1 := strconv.Atoi(a)
		to, err2 := from, error(nil)
		if isRange {
			to, err2 = strconv.Atoi(b)
		}
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("parse ip_local_reserved_ports %q: %w", list, err)
		}
		n += max(0, min(to, hi)-max(from, lo)+1)
	}
	return n, nil
}

func (k *kernel) readOverflow(src source) {
	const name = "TcpExt.TCPTimeWaitOverflow"
	b, err := src.readFile(pathNetstat)
	v := 0
	if err == nil {
		v, err = procnet.NetstatField(b, "TcpExt", "TCPTimeWaitOverflow")
	}
	if err != nil {
		k.add(name, "", err, src.goos, meansOverflow(-1))
		return
	}
	k.overflow = figure{v: v, ok: true}
	k.add(name, strconv.Itoa(v), nil, src.goos, meansOverflow(v))
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

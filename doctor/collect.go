package doctor

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/sockdiag"
	"github.com/closeproxy/closeproxy/twwatch"
)

// DefaultRate is the expected new connections/s per listener when Options
// names none.
const DefaultRate = 100

// MaxRate bounds the rate doctor judges at: far above what one host
// accepts (a billion connections a second), low enough that the ports
// pinned (rate x 60 s) stay an exact integer.
const MaxRate = 1e9

// Options say what Collect judges.
type Options struct {
	// Config, if set, is judged leg by leg; ConfigPath names it in the report.
	Config     *config.Config
	ConfigPath string
	// Rate is the expected new connections per second on each listener; a
	// backend sees the sum of its listeners' rates. 0 means DefaultRate.
	Rate float64
	// Top is how many destinations and listening ports are listed; 0 means 10.
	Top int

	src source // zero: this host
}

// source is where Collect reads from: this host, or a fabricated one in tests.
type source struct {
	kernel twwatch.Kernel // files and sockets, read as twwatch reads them
	noFile func() (soft, hard uint64, err error)
	goos   string
}

// stateListen is TCP_LISTEN as the kernel numbers it; sockdiag names only
// the states its other callers ask for.
const stateListen sockdiag.State = 10

func hostSource() source {
	return source{kernel: twwatch.Kernel{}, noFile: noFileLimit, goos: runtime.GOOS}
}

// sockets lists every TIME-WAIT and LISTEN socket: doctor judges the whole
// host, not only a proxy's targets.
func (src source) sockets() ([]sockdiag.Socket, error) {
	return src.kernel.Sockets(nil, sockdiag.TimeWait, stateListen)
}

// Collect reads this host's TIME-WAIT sockets and settings, judges the
// configuration if one is given, and returns the report. Figures that
// cannot be read are listed in Report.Unread, not returned as errors; the
// error is for options that make no sense.
func Collect(opts Options) (*Report, error) {
	if opts.Rate < 0 || opts.Rate > MaxRate {
		return nil, fmt.Errorf("doctor: rate %v: must be from 0 to %g", opts.Rate, float64(MaxRate))
	}
	if opts.Rate == 0 {
		opts.Rate = DefaultRate
	}
	if opts.Top <= 0 {
		opts.Top = 10
	}
	if opts.src.noFile == nil {
		opts.src = hostSource()
	}
	return collect(opts), nil
}

func collect(opts Options) *Report {
	k := readKernel(opts.src)
	rep := &Report{Settings: k.settings, Unread: k.unread}
	socks, err := opts.src.sockets()
	if err != nil {
		rep.TimeWait.Error = unreadable(err, opts.src.goos)
		rep.Unread = append(rep.Unread, "TIME-WAIT sockets (sock_diag): "+rep.TimeWait.Error)
	} else {
		rep.TimeWait = groupTimeWait(socks, k.usable, opts.Top, k.portLo, k.portHi)
	}
	rep.TimeWait.UsablePorts, rep.TimeWait.MaxBuckets = k.usable, k.maxTW.v
	if opts.Config != nil {
		rep.Config, rep.Rate = opts.ConfigPath, opts.Rate
		rep.Legs = legs(opts.Config, opts.Rate, k.usable, k.reuses)
	}
	rep.Warnings, rep.Recommendations = advise(rep, k)
	if rep.Unread == nil {
		rep.Unread = []string{}
	}
	return rep
}

// unreadable says in a few words why a figure could not be read.
func unreadable(err error, goos string) string {
	switch {
	case goos != "linux":
		return "not Linux (" + goos + ")"
	case errors.Is(err, os.ErrPermission):
		return "needs privileges: " + err.Error()
	case errors.Is(err, os.ErrNotExist):
		return "not present in this kernel: " + err.Error()
	}
	return err.Error()
}

package admin

import (
	"errors"
	"fmt"
	"os"

	"github.com/closeproxy/closeproxy/procnet"
	"github.com/closeproxy/closeproxy/sockdiag"
)

// readKernel reads every figure it can; the error joins those it could not.
func readKernel(t *kernelTargets) (kernelSample, error) {
	var s kernelSample
	var errs []error
	if socks, err := sockdiag.List(sockdiag.TimeWait); err != nil {
		errs = append(errs, fmt.Errorf("list TIME-WAIT sockets: %w", err))
	} else {
		s.front, s.back = t.count(socks)
	}
	read := func(f *figure, v int, err error) {
		if err != nil {
			errs = append(errs, err)
			return
		}
		*f = have(v)
	}
	n, err := procnet.ReadTimeWait()
	read(&s.host, n, err)
	n, err = procnet.ReadMaxTWBuckets()
	read(&s.maxTW, n, err)
	b, err := os.ReadFile(procnet.NetstatPath)
	if err == nil {
		n, err = procnet.NetstatField(b, "TcpExt", "TCPTimeWaitOverflow")
	}
	if err != nil {
		err = fmt.Errorf("read %s: %w", procnet.NetstatPath, err)
	}
	read(&s.overflow, n, err)
	return s, errors.Join(errs...)
}

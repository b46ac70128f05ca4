//go:build !linux

package proxy

import (
	"errors"
	"net/netip"
)

var errNoKernelFigures = errors.New("kernel TIME-WAIT figures need Linux")

func timeWaitToward([]netip.AddrPort) (map[netip.AddrPort]int, int, error) {
	return nil, 0, errNoKernelFigures
}

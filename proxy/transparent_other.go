//go:build !linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

var errTransparent = errors.New("transparent mode (IP_TRANSPARENT, SO_ORIGINAL_DST) is Linux-only")

func hasNetAdmin() (bool, error) { return false, errTransparent }

func transparentDial(string, string, syscall.RawConn) error { return errTransparent }

func transparentListen(string, string, syscall.RawConn) error { return errTransparent }

func originalDst(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, errTransparent }

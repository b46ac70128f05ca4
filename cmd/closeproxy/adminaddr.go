package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/closeproxy/closeproxy/config"
)

// configAdmin is the host:port to reach the admin listener of the
// configuration at path on: its admin.listen, with a wildcard host
// dialled on loopback, since POST /drain is only taken from loopback.
// flagName is the flag that names the listener instead.
func configAdmin(path, flagName string) (string, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return "", err
	}
	listen := cfg.Admin.Listen
	if listen == "off" {
		return "", fmt.Errorf(`%s: admin.listen is "off": that proxy serves no admin endpoints to reach; set admin.listen = %q and restart it`,
			path, config.Defaults().Admin.Listen)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil { // Load checked it
		return "", fmt.Errorf("%s: admin.listen %q: %w", path, listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf(`%s: admin.listen %q takes a free port at each start: pass %s with the one its "listening" log line names`, path, listen, flagName)
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.Unmap().IsUnspecified() {
		host = "127.0.0.1" // "" listens on IPv4 loopback too
		if err == nil && ip.Is6() && !ip.Is4In6() {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// given reports whether the flag name was on the command line: then it
// wins over what -config says.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// notRunning adds, to an error that is a refused connection, where the
// admin listener should have been and how to name another.
func notRunning(err error, flagName string) error {
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return err
	}
	return fmt.Errorf("%w: is closeproxy running? its admin listener is admin.listen (pass %s or -config)", err, flagName)
}

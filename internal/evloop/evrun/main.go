//go:build linux

// Command evrun runs the event-loop prototype (package evloop) as a process
// of its own, so that `go run ./bench -prototype` can measure it beside
// HAProxy and closeproxy: what a bare Go event loop — accept, dial and relay
// on the loop, no policy, no records, no kernel readings — costs on the
// machine at hand. It is a yardstick, not part of the proxy.
//
//	evrun 127.0.0.1:18083 127.0.0.1:18080   # listen, backend; SIGINT or SIGTERM ends it
package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"

	"github.com/closeproxy/closeproxy/internal/evloop"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "evrun:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: evrun LISTEN_ADDR:PORT BACKEND_ADDR:PORT")
	}
	listen, err := netip.ParseAddrPort(args[0])
	if err != nil {
		return fmt.Errorf("listen address: %w", err)
	}
	backend, err := netip.ParseAddrPort(args[1])
	if err != nil {
		return fmt.Errorf("backend address: %w", err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	s, err := evloop.Start(evloop.Config{Listen: listen, Backend: backend})
	if err != nil {
		return err
	}
	<-stop
	return s.Close()
}

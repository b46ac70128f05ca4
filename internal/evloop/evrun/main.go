//go:build linux

// Command evrun runs the event-loop prototype (package evloop) as a process
// of its own, so that `go run ./bench -prototype` can measure it beside
// HAProxy and closeproxy: what a bare Go event loop — accept, dial and relay
// on the loop, no policy, no records, no kernel readings — costs on the
// machine at hand. It is a yardstick, not part of the proxy.
//
//	evrun 127.0.0.1:18083 127.0.0.1:18080         # listen, backend; SIGINT or SIGTERM ends it
//	evrun -http1 127.0.0.1:18083 127.0.0.1:18080  # http1 exchanges on the loops (evloop.Config.HTTP1)
//	evrun -loops 4 …                              # four loops (default: one per GOMAXPROCS)
//	evrun -http1 -readings 7 …                    # and the kernel readings true records take per connection
package main

import (
	"flag"
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
	fs := flag.NewFlagSet("evrun", flag.ContinueOnError)
	http1 := fs.Bool("http1", false, "serve http1 exchanges on the loops instead of relaying bytes")
	loops := fs.Int("loops", 0, "event loops (0: GOMAXPROCS)")
	readings := fs.Int("readings", 0, "with -http1: kernel readings per client connection at its end, as true records take them (evloop.Config.Readings)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if args = fs.Args(); len(args) != 2 {
		return fmt.Errorf("usage: evrun [-http1 [-readings N]] [-loops N] LISTEN_ADDR:PORT BACKEND_ADDR:PORT")
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
	s, err := evloop.Start(evloop.Config{Listen: listen, Backend: backend, HTTP1: *http1, Loops: *loops, Readings: *readings})
	if err != nil {
		return err
	}
	<-stop
	return s.Close()
}

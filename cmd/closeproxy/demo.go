package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/closeproxy/closeproxy/demo"
)

// demoFunc runs the demonstration; a seam for tests.
type demoFunc func(ctx context.Context, w io.Writer, o demo.Options) error

func cmdDemo(args []string, stdout, stderr io.Writer, run demoFunc) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demo.Options
	fs.IntVar(&o.Conns, "n", 200, "connections per row")
	fs.IntVar(&o.Concurrency, "c", 100, "clients at once")
	if err := fs.Parse(args); err != nil {
		return flagCode(err)
	}
	if o.Conns < 1 || o.Concurrency < 1 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "closeproxy demo: -n and -c take a number of at least 1, and demo no arguments")
		return 2
	}
	// No more run at once than there are connections: "1000 at a time"
	// of 10 would misreport what ran.
	o.Concurrency = min(o.Concurrency, o.Conns)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, stdout, o); err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	return 0
}

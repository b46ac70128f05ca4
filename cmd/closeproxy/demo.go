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

func cmdDemo(args []string, stdout, stderr io.Writer) int {
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := demo.Run(ctx, stdout, o); err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 1
	}
	return 0
}

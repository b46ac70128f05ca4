package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/doctor"
)

// cmdDoctor reads this host's TIME-WAIT pressure and, with -config, judges
// the configuration's legs, then prints the report. It changes nothing.
// Exit 0, also when figures could not be read (the report says which);
// 1 when the configuration does not load; 2 on bad flags.
func cmdDoctor(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "judge this closeproxy configuration's legs too")
	rate := fs.Float64("rate", doctor.DefaultRate, "expected new connections/s per listener")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return flagCode(err)
	}
	if fs.NArg() > 0 || !(*rate > 0 && *rate <= doctor.MaxRate) { // NaN fails both
		fmt.Fprintf(stderr, "closeproxy doctor: usage: closeproxy doctor [-config FILE] [-rate N] [-json] (0 < N <= %g)\n", float64(doctor.MaxRate))
		return 2
	}
	opts := doctor.Options{Rate: *rate, ConfigPath: *path}
	if *path != "" {
		cfg, err := config.Load(*path)
		if err != nil {
			fmt.Fprintln(stderr, "closeproxy doctor:", err)
			return 1
		}
		opts.Config = cfg
	}
	rep, err := doctor.Collect(opts)
	if err != nil {
		fmt.Fprintln(stderr, "closeproxy doctor:", err)
		return 2
	}
	write := rep.WriteText
	if *asJSON {
		write = rep.WriteJSON
	}
	if err := write(stdout); err != nil {
		fmt.Fprintln(stderr, "closeproxy doctor: write report:", err)
		return 1
	}
	return 0
}

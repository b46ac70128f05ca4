package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/closeproxy/closeproxy/config"
)

// cmdDrain asks a running closeproxy to drain (POST /drain on its admin
// listener): it stops accepting and fails readiness at once, and lets its
// sessions finish. With -wait it returns once they have, for a preStop hook
// that must not let the web server stop before the proxy is done with it.
// The proxy keeps running until SIGTERM.
func cmdDrain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", config.Defaults().Admin.Listen, "host:port of the admin listener (from this host: only loopback clients may drain)")
	wait := fs.Bool("wait", false, "return only when every session has ended")
	delay := fs.Duration("delay", 0, "fail readiness at once but keep accepting for this long first, while load balancers take the pod out of rotation")
	timeout := fs.Duration("timeout", time.Minute, "with -wait: how long to wait for the sessions (exit 1 if some are still open)")
	doneFile := fs.String("done-file", "", "create this file when drain returns, drained or not, for another container's preStop to wait on")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *timeout <= 0 || *delay < 0 {
		fmt.Fprintln(stderr, "usage: closeproxy drain [-admin HOST:PORT] [-delay D] [-wait] [-timeout D] [-done-file PATH]")
		return 2
	}
	code := drain(*admin, *delay, *wait, *timeout, stdout, stderr)
	if *doneFile != "" {
		if err := os.WriteFile(*doneFile, []byte(fmt.Sprintf("%d\n", code)), 0o644); err != nil {
			fmt.Fprintf(stderr, "drain: write done file: %v\n", err)
			return 1
		}
	}
	return code
}

// drain posts /drain to admin and returns the exit code.
func drain(admin string, delay time.Duration, wait bool, timeout time.Duration, stdout, stderr io.Writer) int {
	u := url.URL{Scheme: "http", Host: admin, Path: "/drain"}
	client := http.Client{Timeout: 5 * time.Second}
	q := url.Values{}
	if delay > 0 {
		q.Set("delay", delay.String())
		if wait {
			client.Timeout += delay
		}
	}
	if wait {
		q.Set("wait", timeout.String())
		client.Timeout += timeout
	}
	u.RawQuery = q.Encode()
	resp, err := client.Post(u.String(), "", nil)
	if err != nil {
		fmt.Fprintf(stderr, "drain: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprintf(stdout, "%d %s", resp.StatusCode, body)
	if resp.StatusCode/100 != 2 {
		return 1
	}
	return 0
}

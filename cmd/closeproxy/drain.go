package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"time"

	"github.com/closeproxy/closeproxy/config"
)

// cmdDrain asks a running closeproxy to drain (POST /drain on its admin
// listener): it stops accepting and fails readiness at once, and lets its
// sessions finish. With -wait it returns once they have, for a preStop hook
// that must not let the web server stop before the proxy is done with it.
// The proxy keeps running until SIGTERM. -config finds the admin listener
// of a configuration whose admin.listen is not the default.
func cmdDrain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	admin := fs.String("admin", config.Defaults().Admin.Listen, "host:port of the admin listener (from this host: only loopback clients may drain)")
	path := fs.String("config", "", "reach the admin listener at this configuration's admin.listen (-admin, when given, wins)")
	wait := fs.Bool("wait", false, "return only when every session has ended")
	delay := fs.Duration("delay", 0, "fail readiness at once but keep accepting for this long first, while load balancers take the pod out of rotation (at most 10m)")
	timeout := fs.Duration("timeout", time.Minute, "with -wait: how long to wait for the sessions (exit 1 if some are still open; at most 10m)")
	doneFile := fs.String("done-file", "", "create this file when drain returns, drained or not, for another container's preStop to wait on")
	var code int
	if err := fs.Parse(args); err != nil { // the flag package said why
		if code = flagCode(err); code != 0 {
			fmt.Fprintln(stderr, drainUsage)
		}
	} else if err := drainFlags(fs.Args(), *admin, *delay, *timeout); err != nil {
		fmt.Fprintf(stderr, "closeproxy drain: %v\n%s\n", err, drainUsage)
		code = 2
	} else if *path == "" || given(fs, "admin") {
		code = drain(*admin, *delay, *wait, *timeout, stdout, stderr)
	} else if addr, err := configAdmin(*path, "-admin", stderr); err != nil {
		fmt.Fprintln(stderr, "closeproxy drain:", err) // the configuration's problem, named
		code = 1
	} else {
		code = drain(addr, *delay, *wait, *timeout, stdout, stderr)
	}
	// Written whatever the outcome, a mistyped hook included: the
	// container waiting on it must not wait out its whole bound.
	if *doneFile != "" {
		if err := os.WriteFile(*doneFile, []byte(fmt.Sprintf("%d\n", code)), 0o644); err != nil {
			fmt.Fprintf(stderr, "drain: write done file: %v\n", err)
			return 1
		}
	}
	return code
}

const drainUsage = "usage: closeproxy drain [-admin HOST:PORT | -config FILE] [-delay D] [-wait] [-timeout D] [-done-file PATH]"

// drainFlags says what is wrong with drain's flags once parsed, if
// anything: args left over, an admin address without a port, a negative
// delay or a timeout that is not positive.
func drainFlags(args []string, admin string, delay, timeout time.Duration) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q (flags go first)", args[0])
	}
	host, port, err := net.SplitHostPort(admin)
	if err != nil || port == "" {
		return fmt.Errorf("-admin %q: want HOST:PORT, e.g. %s", admin, config.Defaults().Admin.Listen)
	}
	if ip, err := netip.ParseAddr(host); err == nil && !ip.Unmap().IsLoopback() && !ip.IsUnspecified() {
		// The admin listener takes /drain from loopback only: nothing is
		// sent off this host to learn that.
		return fmt.Errorf("-admin %q: the admin listener takes /drain from loopback only; give its loopback address, e.g. 127.0.0.1:%s", admin, port)
	}
	if delay < 0 {
		return fmt.Errorf("-delay %v: want 0 or more", delay)
	}
	if timeout <= 0 {
		return fmt.Errorf("-timeout %v: want more than 0", timeout)
	}
	return nil
}

// drainAnswerWait is how long drain waits for /drain's answer, beyond
// the delay and the wait it asks for.
var drainAnswerWait = 5 * time.Second

// drain posts /drain to admin and returns the exit code.
func drain(admin string, delay time.Duration, wait bool, timeout time.Duration, stdout, stderr io.Writer) int {
	u := url.URL{Scheme: "http", Host: admin, Path: "/drain"}
	client := http.Client{Timeout: drainAnswerWait}
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
		fmt.Fprintf(stderr, "drain: %v\n", unanswered(notRunning(err, "-admin")))
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err := fromAdmin(resp, "-admin"); err != nil {
		fmt.Fprintln(stderr, "drain:", err) // another server's answer on stdout would read as a drain begun
		return 1
	}
	fmt.Fprintf(stdout, "%d %s", resp.StatusCode, body)
	if resp.StatusCode/100 != 2 {
		return 1
	}
	return 0
}

// unanswered adds to a request that got no answer in time what may still
// come of it: a proxy out of descriptors cannot accept the admin
// connection, which waits in its kernel with the request in it, and
// carries the drain out once descriptors come back.
func unanswered(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) || !ue.Timeout() {
		return err
	}
	return fmt.Errorf("%w: no answer; the request may still wait in the proxy's kernel and be carried out once the proxy takes it "+
		"(out of descriptors, its admin listener cannot: see its log); its /readyz answers 503 once it drains", err)
}

package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/closeproxy/closeproxy/config"
)

// cmdHealthcheck asks the admin listener whether the process is healthy, for
// container HEALTHCHECKs in images without a shell or curl. -config finds
// the admin listener of a configuration whose admin.listen is not the
// default.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("url", "http://"+config.Defaults().Admin.Listen+"/healthz", "the admin endpoint to ask (use /readyz for readiness)")
	path := fs.String("config", "", "ask /healthz at this configuration's admin.listen (-url, when given, wins)")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return flagCode(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "closeproxy healthcheck: unexpected argument %q (the endpoint goes in -url URL, the file in -config FILE)\n", fs.Arg(0))
		return 2
	}
	if *timeout <= 0 { // 0 would be no timeout: a probe that can hang
		fmt.Fprintf(stderr, "closeproxy healthcheck: -timeout %v: want more than 0\n", *timeout)
		return 2
	}
	if *path != "" && !given(fs, "url") {
		addr, err := configAdmin(*path, "-url", stderr)
		if err != nil {
			fmt.Fprintln(stderr, "closeproxy healthcheck:", err) // the configuration's problem, named
			return 1
		}
		*target = healthURL(addr)
	}
	if u, err := url.Parse(*target); err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		hostPort := config.Defaults().Admin.Listen
		if _, _, err := net.SplitHostPort(*target); err == nil && !strings.Contains(*target, "/") {
			hostPort = *target
		}
		fmt.Fprintf(stderr, "closeproxy healthcheck: -url %q is not an http:// URL, such as http://%s/healthz\n", *target, hostPort)
		return 2
	}
	client := http.Client{Timeout: *timeout}
	resp, err := client.Get(*target)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", notRunning(err, "-url"))
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err := fromAdmin(resp, "-url"); err != nil {
		// Another server's answer ("200 hello") on stdout would read
		// as this check passing.
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%d %s", resp.StatusCode, body)
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// healthURL is the /healthz URL of the admin listener at addr, a zone in
// it escaped ("[fe80::1%eth0]:9901" takes "%25eth0" in a URL).
func healthURL(addr string) string {
	return (&url.URL{Scheme: "http", Host: addr, Path: "/healthz"}).String()
}

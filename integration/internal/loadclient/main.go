// Command loadclient is the integration tests' bounded HTTP/1.1 load
// client. It opens -n connections to -addr, -c at a time, sends one GET on
// each, reads the whole response, checks the body, ends the connection the
// way -close says, and prints one JSON summary on stdout.
//
// Who closes first decides where TIME-WAIT lands, so -close is explicit:
//
//	client  close right after the response is complete (client sends the first FIN)
//	server  wait for the server's EOF first, then close (server sends the first FIN);
//	        an RST instead of the EOF counts as ok, in server_resets
//	reset   close with SO_LINGER 0 after the response (RST, no TIME-WAIT anywhere)
//	halfclose
//	        shut down writing right after the request (the client's FIN is first,
//	        before any response byte), read the response, then wait for the
//	        server's EOF (or RST, counted in server_resets) as with server
//	halfclose-after
//	        shut down writing once the response is complete (the client's FIN
//	        is first, after the whole answer), then wait for the server's EOF
//	        (or RST) as with server: a client done with the connection that
//	        stays until the server ends it
//
// -close-delay pauses between the complete response and the close (a client
// busy with the response before it closes), so that a server's FIN sent
// right after its response reaches an intermediary before the client's.
//
// The run is bounded twice: by -n and by -max-duration, after which no new
// connection starts; every connection's I/O is bounded by -timeout.
//
//	loadclient -addr 10.231.2.1:80 -n 200 -c 20 -connection close -close server
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadclient:", err)
		os.Exit(2)
	}
	sum := run(cfg)
	if err := json.NewEncoder(os.Stdout).Encode(sum); err != nil {
		fmt.Fprintln(os.Stderr, "loadclient:", err)
		os.Exit(1)
	}
}

// maxConns caps -n so a typo cannot turn a test into a flood.
const maxConns = 200000

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("loadclient", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "", "server `host:port` (required)")
	fs.IntVar(&c.n, "n", 100, "connections to open in all")
	fs.IntVar(&c.c, "c", 10, "connections open at once")
	fs.StringVar(&c.path, "path", "/", "request path")
	fs.StringVar(&c.host, "host", "", "Host header (default -addr)")
	src := fs.String("src", "", "local `ip` to dial from (default: the kernel's choice)")
	fs.StringVar(&c.connection, "connection", "keep-alive", "Connection header value; empty leaves the header out")
	fs.StringVar(&c.close, "close", "client", "how to end each connection: client, server, reset, halfclose or halfclose-after")
	fs.Int64Var(&c.expectBytes, "expect-bytes", -1, "expected body length; -1 skips the check")
	fs.StringVar(&c.sha256, "sha256", "", "expected SHA-256 of the body, hex; empty skips the check")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "bound on each connection's connect and I/O")
	fs.DurationVar(&c.closeDelay, "close-delay", 0, "pause between the complete response and ending the connection")
	fs.DurationVar(&c.maxDuration, "max-duration", 30*time.Second, "start no connection after this long")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *src != "" {
		ip := net.ParseIP(*src)
		if ip == nil {
			return c, fmt.Errorf("-src %q: want an IP address", *src)
		}
		c.src = &net.TCPAddr{IP: ip}
	}
	switch {
	case c.addr == "":
		return c, fmt.Errorf("-addr is required")
	case c.n < 1 || c.n > maxConns:
		return c, fmt.Errorf("-n %d: want 1..%d", c.n, maxConns)
	case c.c < 1 || c.c > c.n:
		return c, fmt.Errorf("-c %d: want 1..-n", c.c)
	case c.close != "client" && c.close != "server" && c.close != "reset" && c.close != "halfclose" && c.close != "halfclose-after":
		return c, fmt.Errorf("-close %q: want client, server, reset, halfclose or halfclose-after", c.close)
	case c.closeDelay < 0 || c.closeDelay >= c.timeout:
		return c, fmt.Errorf("-close-delay %v: want 0 up to -timeout", c.closeDelay)
	case c.timeout <= 0 || c.maxDuration <= 0:
		return c, fmt.Errorf("-timeout and -max-duration must be positive")
	}
	if c.host == "" {
		c.host = c.addr
	}
	return c, nil
}

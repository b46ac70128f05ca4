package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/closeproxy/closeproxy/config"
)

// cmdHealthcheck asks the admin listener whether the process is healthy, for
// container HEALTHCHECKs in images without a shell or curl.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://"+config.Defaults().Admin.Listen+"/healthz", "the admin endpoint to ask (use /readyz for readiness)")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	client := http.Client{Timeout: *timeout}
	resp, err := client.Get(*url)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprintf(stdout, "%d %s", resp.StatusCode, body)
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

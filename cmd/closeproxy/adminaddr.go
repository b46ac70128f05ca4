package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"github.com/closeproxy/closeproxy/admin"
	"github.com/closeproxy/closeproxy/config"
)

// configAdmin is the host:port to reach the admin listener of the
// configuration at path on: its admin.listen, with a wildcard host
// dialled on loopback, since POST /drain is only taken from loopback.
// flagName is the flag that names the listener instead.
//
// A file that no longer loads (an edit not yet applied, with a mistake
// in it) still names the admin listener of the proxy that runs: the
// proxy kept its configuration when the reload failed, and admin.listen
// takes effect only at a restart. So a preStop hook's drain is not lost
// to a typo elsewhere in the file: the address is read alone, and warn
// says the file is broken.
func configAdmin(path, flagName string, warn io.Writer) (string, error) {
	listen := config.Defaults().Admin.Listen
	if cfg, err := config.Load(path); err == nil {
		listen = cfg.Admin.Listen
	} else if l, ok := adminListenAlone(path); ok {
		which := "the admin.listen it names"
		if l == "" {
			l, which = listen, "the default admin.listen (it names none)"
		}
		fmt.Fprintf(warn, "closeproxy: warning: %s does not load (closeproxy check -config %s says why); using %s, %q\n", path, path, which, l)
		listen = l
	} else {
		return "", err
	}
	if listen == "off" {
		return "", fmt.Errorf(`%s: admin.listen is "off": that proxy serves no admin endpoints to reach; set admin.listen = %q and restart it`,
			path, config.Defaults().Admin.Listen)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil { // Load checked it
		return "", fmt.Errorf("%s: admin.listen %q: %w", path, listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf(`%s: admin.listen %q takes a free port at each start: pass %s with the one its "listening" log line names`, path, listen, flagName)
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.Unmap().IsUnspecified() {
		host = "127.0.0.1" // "" listens on IPv4 loopback too
		if err == nil && ip.Is6() && !ip.Is4In6() {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// adminListenAlone reads admin.listen alone from a TOML file, any other
// key and value ignored ("" when it names none: the default); false when
// the file cannot be read. A file that is not TOML (a quote or bracket
// left open, the likeliest slip in an edit) is scanned line by line for
// the key instead: found, it is the address; not found, false, since the
// broken line may be the one that set it.
func adminListenAlone(path string) (string, bool) {
	var f struct {
		Admin struct{ Listen *string } `toml:"admin"`
	}
	_, err := toml.DecodeFile(path, &f)
	switch {
	case errors.As(err, new(toml.ParseError)):
		return scanAdminListen(path)
	case err != nil:
		return "", false
	case f.Admin.Listen == nil:
		return "", true // none named: the default
	}
	return *f.Admin.Listen, true
}

// adminListenLine is admin.listen's line: `listen = "…"` in [admin], or
// `admin.listen = "…"` before any table, a comment allowed after it.
var adminListenLine = regexp.MustCompile(`^\s*(admin\s*\.\s*)?listen\s*=\s*"([^"\\]*)"\s*(#.*)?$`)

// scanAdminListen finds admin.listen's value in a file TOML cannot parse.
func scanAdminListen(path string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	table := ""
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			head, _, _ := strings.Cut(line, "#")
			table = strings.Join(strings.Fields(strings.Trim(head, "[] \t")), "")
			continue
		}
		m := adminListenLine.FindStringSubmatch(line)
		if m != nil && (table == "admin" && m[1] == "" || table == "" && m[1] != "") {
			return m[2], true
		}
	}
	return "", false
}

// given reports whether the flag name was on the command line: then it
// wins over what -config says.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// notRunning adds, to an error that is a refused connection, where the
// admin listener should have been and how to name another.
func notRunning(err error, flagName string) error {
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return err
	}
	return fmt.Errorf("%w: is closeproxy running? its admin listener is admin.listen (pass %s or -config)", err, flagName)
}

// fromAdmin says why resp is no closeproxy admin listener's answer: a
// web server at a wrong address answers 200 too, and a drain that never
// happened must not pass for one (a preStop hook would let the web server
// go while the proxy still relays to it).
func fromAdmin(resp *http.Response, flagName string) error {
	if got := resp.Header.Get("Server"); got != admin.ServerHeader {
		return fmt.Errorf("%s answered, but not as a closeproxy admin listener (Server %q): check %s or -config", resp.Request.URL.Host, got, flagName)
	}
	return nil
}

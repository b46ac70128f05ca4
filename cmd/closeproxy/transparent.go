package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The policy routing transparent mode needs. A back-leg socket bound to a
// client's address (source = "client"), and a socket tproxy handed a
// connection for another address, receive packets addressed to an address
// this host does not own: without help the kernel forwards them (or drops
// them). The nftables rule marks every packet that belongs to such a
// transparent socket; the rule and route send marked packets to the local
// stack, where the socket takes them:
//
//	table inet closeproxy_transparent {
//		chain divert {
//			type filter hook prerouting priority mangle; policy accept;
//			meta l4proto tcp socket transparent 1 meta mark set 0x1 accept
//		}
//	}
//	ip rule add fwmark 0x1 lookup 100
//	ip route add local 0.0.0.0/0 dev lo table 100
//	(and the same with ip -6 and ::/0)

// nftTable is the nftables table setup creates and teardown deletes.
const nftTable = "closeproxy_transparent"

// runFunc runs one command with stdin and returns its stderr; a seam for
// tests.
type runFunc func(name string, args []string, stdin string) (stderr string, err error)

// execRun runs the command, bounded by a minute.
func execRun(name string, args []string, stdin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	return stderr.String(), err
}

type routing struct {
	mark, table string
	ipv6, dry   bool
	run         runFunc
	out         io.Writer
}

func cmdTransparent(args []string, stdout, stderr io.Writer, run runFunc) int {
	action := "setup|teardown" // named in the usage until one is given
	if len(args) > 0 && (args[0] == "setup" || args[0] == "teardown") {
		action, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("transparent "+action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	mark := fs.String("mark", "0x1", "firewall mark of packets for transparent sockets")
	table := fs.Int("table", 100, "routing table that delivers marked packets locally")
	ipv6 := fs.Bool("ipv6", true, "also set up IPv6 (ip -6)")
	dry := fs.Bool("dry-run", false, "print the commands without running them")
	if err := fs.Parse(args); err != nil {
		return flagCode(err) // 0 after -h, with or without the action
	}
	if action != "setup" && action != "teardown" {
		fmt.Fprint(stderr, "closeproxy transparent: need setup or teardown, before the flags\n", usage)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "closeproxy transparent %s: unexpected %q\n", action, fs.Args())
		return 2
	}
	m, err := strconv.ParseUint(*mark, 0, 32)
	if err != nil || m == 0 {
		fmt.Fprintf(stderr, "closeproxy transparent: -mark %q: want a nonzero 32-bit number such as 0x1\n", *mark)
		return 2
	}
	if *table < 1 || *table >= 253 && *table <= 255 || int64(*table) > 1<<32-1 { // ip(8) takes table ids up to 2^32-1
		fmt.Fprintf(stderr, "closeproxy transparent: -table %d: want a table number from 1 to 4294967295 other than 253, 254, 255 (default, main, local)\n", *table)
		return 2
	}
	r := routing{mark: fmt.Sprintf("%#x", m), table: strconv.Itoa(*table), ipv6: *ipv6, dry: *dry, run: run, out: stdout}
	if action == "teardown" {
		err = r.teardown()
	} else {
		err = r.setup()
	}
	if err != nil {
		fmt.Fprintln(stderr, "closeproxy transparent", action+":", err)
		return 1
	}
	return 0
}

// ruleset is the nftables table that marks packets of transparent sockets.
func (r routing) ruleset() string {
	return fmt.Sprintf(`table inet %s {
	chain divert {
		type filter hook prerouting priority mangle; policy accept;
		meta l4proto tcp socket transparent 1 meta mark set %s accept
	}
}
`, nftTable, r.mark)
}

func (r routing) families() []string {
	if r.ipv6 {
		return []string{"-4", "-6"}
	}
	return []string{"-4"}
}

// rule is the ip(8) arguments that add or del (verb) the rule sending
// marked packets of family f (-4 or -6) to the table.
func (r routing) rule(f, verb string) []string {
	return []string{f, "rule", verb, "fwmark", r.mark, "lookup", r.table}
}

// route is the ip(8) arguments that add or del (verb) the table's route
// delivering every address of family f locally.
func (r routing) route(f, verb string) []string {
	all := "0.0.0.0/0"
	if f == "-6" {
		all = "::/0"
	}
	return []string{f, "route", verb, "local", all, "dev", "lo", "table", r.table}
}

// setup removes what an earlier setup left, then adds the table, rules and
// routes: running it twice leaves one copy.
func (r routing) setup() error {
	if err := r.teardown(); err != nil {
		return err
	}
	if err := r.cmd("nft", []string{"-f", "-"}, r.ruleset(), false); err != nil {
		return err
	}
	for _, f := range r.families() {
		if err := r.cmd("ip", r.rule(f, "add"), "", false); err != nil {
			return err
		}
		if err := r.cmd("ip", r.route(f, "add"), "", false); err != nil {
			return err
		}
	}
	return nil
}

// teardown removes the table, every copy of the rule and the route; what
// is already gone is no error.
func (r routing) teardown() error {
	if err := r.cmd("nft", []string{"delete", "table", "inet", nftTable}, "", true); err != nil && !errors.Is(err, errAbsent) {
		return err
	}
	for _, f := range r.families() {
		for range 16 { // ip rule add makes duplicates; remove each
			err := r.cmd("ip", r.rule(f, "del"), "", true)
			if errors.Is(err, errAbsent) || r.dry {
				break
			}
			if err != nil {
				return err
			}
		}
		err := r.cmd("ip", r.route(f, "del"), "", true)
		if err != nil && !errors.Is(err, errAbsent) {
			return err
		}
	}
	return nil
}

// errAbsent: the thing to delete is not there.
var errAbsent = errors.New("already absent")

// cmd prints and runs one command. With absentOK, a "not found" failure
// returns errAbsent.
func (r routing) cmd(name string, args []string, stdin string, absentOK bool) error {
	line := name + " " + strings.Join(args, " ")
	if stdin != "" {
		line += " <<EOF\n" + stdin + "EOF"
	}
	fmt.Fprintln(r.out, "+", line)
	if r.dry {
		return nil
	}
	stderr, err := r.run(name, args, stdin)
	if err == nil {
		return nil
	}
	if absentOK && isAbsent(stderr) {
		fmt.Fprintln(r.out, "  (absent)")
		return errAbsent
	}
	var ee *exec.Error
	if errors.As(err, &ee) && name == "nft" {
		return fmt.Errorf("%s: %w (install nftables)", line, err)
	}
	return fmt.Errorf("%s: %w: %s", line, err, strings.TrimSpace(stderr))
}

// isAbsent recognises nft's and ip's "no such thing" answers.
func isAbsent(stderr string) bool {
	return strings.Contains(stderr, "No such file or directory") || strings.Contains(stderr, "No such process") ||
		strings.Contains(stderr, "does not exist")
}

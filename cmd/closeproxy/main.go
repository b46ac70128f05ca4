// Command closeproxy is a layer-4 TCP proxy that decides, on each leg, who
// sends the first FIN, so that TIME-WAIT lands where it costs least.
//
// Usage:
//
//	closeproxy run -config FILE     serve (also: closeproxy -config FILE)
//	closeproxy check -config FILE   validate (-print: the effective config)
//	closeproxy drain [-wait]        stop accepting, fail readiness, let sessions finish
//	closeproxy demo                 measure on loopback where TIME-WAIT lands
//	closeproxy doctor               read this host's TIME-WAIT pressure, say what to do
//	closeproxy healthcheck          ask the admin listener (exit 0 when healthy)
//	closeproxy transparent setup    policy routing for source = "client" and tproxy
//	closeproxy version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/admin"
	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/demo"
	"github.com/closeproxy/closeproxy/proxy"
	"github.com/closeproxy/closeproxy/twwatch"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			fmt.Fprint(stdout, usage)
			return 0
		case "-version", "--version":
			return cmdVersion(args[1:], stdout, stderr)
		}
	}
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	if c, ok := commands[cmd]; ok {
		return c(args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "closeproxy: unknown command %q\n%s", cmd, usage)
	return 2
}

// commands are run's subcommands by name: the one list that both run and
// help COMMAND go by. Set in init: help refers back to run.
var commands map[string]func(args []string, stdout, stderr io.Writer) int

func init() {
	commands = map[string]func([]string, io.Writer, io.Writer) int{
		"run":         cmdRun,
		"check":       cmdCheck,
		"demo":        func(a []string, o, e io.Writer) int { return cmdDemo(a, o, e, demo.Run) },
		"doctor":      cmdDoctor,
		"healthcheck": cmdHealthcheck,
		"drain":       cmdDrain,
		"transparent": func(a []string, o, e io.Writer) int { return cmdTransparent(a, o, e, execRun) },
		"version":     cmdVersion,
		"help":        cmdHelp,
	}
}

// cmdHelp prints the usage, or with a command's name that command's flags
// (help drain: drain -h).
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && commands[args[0]] != nil {
		return run([]string{args[0], "-h"}, stdout, stdout) // asked for: stdout, as help's own list (help check | less)
	}
	switch {
	case len(args) == 1 && args[0] != "-h" && args[0] != "-help" && args[0] != "--help":
		fmt.Fprintf(stderr, "closeproxy help: no command %q (closeproxy help lists them)\n", args[0])
		return 2
	case len(args) > 1:
		fmt.Fprintf(stderr, "closeproxy help: unexpected argument %q (help takes a command's name, for its flags)\n", strings.Join(args, " "))
		return 2
	}
	fmt.Fprint(stdout, usage)
	return 0
}

const usage = `usage:
  closeproxy run -config FILE     serve (the default: closeproxy -config FILE)
  closeproxy check -config FILE [-print]
                                  validate: one line, "FILE: ok (…)", or every error;
                                  -print: also the effective config, defaults filled in
  closeproxy demo [-n N] [-c C]   measure on loopback where TIME-WAIT lands
                                  (-n connections per row, 200; -c at once, 100)
  closeproxy doctor [-config F] [-rate N] [-json]
                                  read this host's TIME-WAIT pressure and say what to do
  closeproxy healthcheck [-url U | -config F] [-timeout D]
                                  ask the admin listener (exit 0 when healthy);
                                  -config: the one at F's admin.listen
  closeproxy drain [-admin HOST:PORT | -config F] [-delay D] [-wait]
                   [-timeout D] [-done-file F]
                                  ask the running proxy to fail readiness, stop
                                  accepting (after -delay) and let its sessions
                                  finish (it keeps running until SIGTERM); -wait
                                  returns once they have; -config: reach it at
                                  F's admin.listen
  closeproxy transparent setup|teardown [-mark M] [-table T] [-ipv6=false] [-dry-run]
                                  add or remove the policy routing of transparent mode
  closeproxy version              (also: --version)
  closeproxy help [COMMAND]       this list (also: -h, --help); a command's flags
`

// cmdVersion prints the version; it takes no flag but -h, and no argument.
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "Usage of version: closeproxy version (no flags, no arguments)") }
	if err := fs.Parse(args); err != nil {
		return flagCode(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "closeproxy version: unexpected argument %q (version takes none)\n", fs.Arg(0))
		return 2
	}
	fmt.Fprintln(stdout, "closeproxy", versionString())
	return 0
}

// flagCode is the exit code after fs.Parse failed with err: 0 when the
// usage was asked for (-h), 2 for a bad flag (the flag package said why).
func flagCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// loadConfig parses args with fs, adding the -config flag, and loads that
// file. On failure it has told stderr why and returns the exit code: 2 for
// bad flags, 1 for a configuration that does not load, 0 after -h.
func loadConfig(fs *flag.FlagSet, args []string, stderr io.Writer) (string, *config.Config, int) {
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path to the TOML configuration")
	if err := fs.Parse(args); err != nil {
		return "", nil, flagCode(err)
	}
	switch {
	case fs.NArg() > 0 && *path == "":
		fmt.Fprintf(stderr, "closeproxy %s: %q is not a flag: did you mean -config %s?\n", fs.Name(), fs.Arg(0), fs.Arg(0))
		return "", nil, 2
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "closeproxy %s: unexpected argument %q (flags go first; the file goes in -config FILE)\n", fs.Name(), fs.Arg(0))
		return "", nil, 2
	case *path == "":
		fmt.Fprintf(stderr, "closeproxy %s: need -config FILE\n", fs.Name())
		return "", nil, 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return "", nil, 1
	}
	return *path, cfg, 0
}

// cmdCheck says whether the configuration loads, in one line; with -print
// that line is a comment atop the effective configuration.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	printCfg := fs.Bool("print", false, "print the effective configuration, every default filled in")
	path, cfg, code := loadConfig(fs, args, stderr)
	if cfg == nil {
		return code
	}
	if err := proxy.CheckNetAdmin(cfg); err != nil {
		// A warning only: the check may run elsewhere (CI, a laptop) than
		// the proxy; `run` refuses.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "warning:", line)
		}
	}
	if err := recordsDir(cfg.Log.Records); err != nil {
		fmt.Fprintf(stderr, "warning: %s: log.records: %v; run would fail here\n", path, err)
	}
	for _, name := range unusedBackends(cfg) {
		// Valid, and maybe meant (a listener yet to come), or a listener
		// that names the wrong one.
		fmt.Fprintf(stderr, "warning: %s: backend %q is used by no listener: nothing dials, checks or waits for it until one names it\n", path, name)
	}
	verdict := fmt.Sprintf("%s: ok (%s, %s)", path,
		count(len(cfg.Listeners), "listener"), count(len(cfg.Backends), "backend"))
	if !*printCfg {
		fmt.Fprintln(stdout, verdict)
		return 0
	}
	fmt.Fprintln(stdout, "#", verdict)
	stdout.Write(cfg.TOML())
	return 0
}

// unusedBackends names, in the file's order, the backends no listener
// names.
func unusedBackends(cfg *config.Config) []string {
	var out []string
	for _, b := range cfg.Backends {
		if !cfg.InUse(b.Name) {
			out = append(out, b.Name)
		}
	}
	return out
}

// recordsDir says why a records file could not be created where
// log.records names one: its directory is missing or not a directory.
// Like the NET_ADMIN check, only a warning from check, which may run on
// another host than the proxy.
func recordsDir(records string) error {
	if records == "" || records == "stderr" || records == "stdout" {
		return nil
	}
	dir := filepath.Dir(records)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("directory %s: %w", dir, errors.Unwrap(err))
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi, err := os.Stat(records); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory; name a file in it", records)
	}
	return nil
}

// count writes n things: "1 backend", "2 backends".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return strconv.Itoa(n) + " " + thing + "s"
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	path, cfg, code := loadConfig(flag.NewFlagSet("run", flag.ContinueOnError), args, stderr)
	if cfg == nil {
		return code
	}
	if err := proxy.CheckNetAdmin(cfg); err != nil {
		fmt.Fprintln(stderr, err) // before serving, as plainly as a config error
		return 1
	}
	// A reader of stderr or stdout (the records' and the log's default)
	// that goes away must not end the proxy: Go's default for a write to
	// fd 1 or 2 with no reader is to die of SIGPIPE. Ignored, the write
	// fails (EPIPE) and the sessions go on.
	signal.Ignore(syscall.SIGPIPE)
	ctx, again, stop := onTerm()
	defer stop()
	hup, usr1 := make(chan os.Signal, 1), make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	return daemon(ctx, path, cfg, stdout, stderr, signals{hup: hup, usr1: usr1, again: again})
}

// onTerm returns a context that the first SIGTERM or SIGINT ends, and a
// channel that the second closes; stop ends the watch.
func onTerm() (ctx context.Context, again <-chan struct{}, stop func()) {
	term := make(chan os.Signal, 2)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancel(context.Background())
	second, done := make(chan struct{}), make(chan struct{})
	go func() {
		select {
		case <-term:
			cancel()
		case <-done:
			return
		}
		select {
		case <-term:
			close(second)
		case <-done:
		}
	}()
	return ctx, second, sync.OnceFunc(func() { signal.Stop(term); close(done); cancel() })
}

// signals are the channels cmdRun fills from the process's signals.
type signals struct {
	hup   <-chan os.Signal // reload the configuration
	usr1  <-chan os.Signal // reopen the records file
	again <-chan struct{}  // closed by a second SIGTERM or SIGINT: shutdown_timeout ends now
}

// descriptorsWanted is what cfg's sessions may hold at once: two each
// (client and backend) under every listener's max_connections; the
// listeners, idle pools, admin and logs take a few more. 0: a listener
// without a cap, which no limit covers.
func descriptorsWanted(cfg *config.Config) uint64 {
	var need uint64
	for _, l := range cfg.Listeners {
		if l.MaxConnections == 0 {
			return 0
		}
		need += 2 * uint64(l.MaxConnections)
	}
	return need
}

// fileLimitWarning is the warning for an open-file limit of nofile (0:
// unknown) under cfg, with the descriptors cfg's caps ask for (0: a
// listener has none), or "" when the limit covers them.
func fileLimitWarning(nofile uint64, cfg *config.Config) (string, uint64) {
	need := descriptorsWanted(cfg)
	const past = "past it, accepts back off, new sessions wait in the kernel's queue and the admin port cannot answer"
	switch {
	case nofile == 0:
		return "", need
	case need == 0:
		return "open-file limit is the only bound on sessions, a listener having max_connections = 0 (no cap): " + past, need
	case nofile < need:
		return "open-file limit below what max_connections asks: " + past, need
	}
	return "", need
}

// daemon serves cfg, loaded from path, until ctx ends, and returns the
// exit code.
func daemon(ctx context.Context, path string, cfg *config.Config, stdout, stderr io.Writer, sig signals) int {
	lg, err := openLogs(cfg.Log, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	defer lg.close()
	log := lg.log
	if n, err := raiseFileLimit(); err != nil {
		log.Warn("could not raise the open-file limit", zap.Error(err))
	} else if msg, need := fileLimitWarning(n, cfg); msg != "" {
		log.Warn(msg, zap.Uint64("nofile", n), zap.Uint64("wanted", need))
	} else if n > 0 {
		log.Info("open-file limit", zap.Uint64("nofile", n))
	}
	watch := func(bg context.Context, p parts) {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() { reopenOnUSR1(bg, sig.usr1, lg) })
		reloadOnHUP(bg, sig.hup, path, p, lg)
	}
	if err := serve(ctx, cfg, lg, watch, sig.again); errors.Is(err, errRecordsStuck) {
		go log.Error("closeproxy stopped", zap.Error(err)) // the log may share the stuck sink: not waited for
		return 1
	} else if err != nil {
		msg := "closeproxy stopped"
		if errors.As(err, new(notStarted)) {
			msg = "closeproxy could not start"
		}
		log.Error(msg, zap.Error(err))
		return 1
	}
	return 0
}

// parts are what serve runs: the proxy, its admin listener and the one
// TIME-WAIT watcher both read.
type parts struct {
	cfg *config.Config // the configuration served since the start
	srv *proxy.Server
	adm *admin.Admin
	tw  *twwatch.Watcher
}

// serve runs the proxy, its admin listener and the TIME-WAIT watcher until
// ctx ends, then drains for shutdown_timeout, or until again is closed
// (a second SIGTERM: the sessions left end as when shutdown_timeout runs
// out). watch, if set, runs beside them (SIGHUP reloads).
func serve(ctx context.Context, cfg *config.Config, lg *logs, watch func(context.Context, parts), again <-chan struct{}) error {
	log := lg.log
	tw := twwatch.New(cfg, log) // auto and the metrics read the same samples
	adm := admin.New(cfg, log, admin.WithWatcher(tw), admin.WithVersion(versionString()), admin.WithRecordsLost(lg.lostRecords))
	srv, err := proxy.New(cfg, log, proxy.WithObserver(adm), proxy.WithWatcher(tw), proxy.WithRecordLog(lg.recordLog()))
	if err != nil {
		return notStarted{err}
	}
	adm.Attach(srv)
	if err := srv.Listen(ctx); err != nil {
		return notStarted{err}
	}
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopBG()
	wg.Go(func() { tw.Run(bg) })
	adminAt, err := startAdmin(bg, &wg, cfg, adm, log)
	if err != nil {
		return notStarted{err}
	}
	log.Info("listening", zap.Stringers("addrs", srv.Addrs()), zap.String("admin", adminAt), zap.String("version", versionString()))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(bg) }()
	if watch != nil {
		wg.Go(func() { watch(bg, parts{cfg: cfg, srv: srv, adm: adm, tw: tw}) })
	}
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	adm.SetDraining()
	log.Info("shutting down", zap.Duration("shutdown_timeout", cfg.ShutdownTimeout), zap.Int64("sessions", srv.Live()))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	wg.Go(func() {
		select {
		case <-again:
			log.Info("signalled again: the sessions left end now, as at the end of shutdown_timeout", zap.Int64("sessions", srv.Live()))
			cancel()
		case <-sctx.Done(): // Shutdown tells of the sessions it cuts
		}
	})
	bound := cfg.ShutdownTimeout + srv.ShutdownBound() + recordsWait
	finished := make(chan error, 1)
	go func() {
		err := errors.Join(srv.Shutdown(sctx), <-served)
		lg.flushRecords() // every session has ended: its record goes out before "stopped"
		finished <- err
	}()
	// A records sink that takes nothing (a pipe whose reader stopped)
	// holds the ended sessions' records, and would hold the process for
	// good: past shutdown's own bound and recordsWait, it exits without
	// them.
	giveUp := time.NewTimer(bound)
	defer giveUp.Stop()
	select {
	case err = <-finished:
	case <-giveUp.C:
		lg.abandon()
		return fmt.Errorf("%w (those of %d ended sessions, and any the sink was writing)", errRecordsStuck, srv.RecordsWriting())
	}
	log.Info("stopped")
	return err
}

// recordsWait is how long shutdown waits, past its own bound, for a
// records sink that takes nothing.
const recordsWait = 5 * time.Second

// errRecordsStuck: shutdown gave up on records its sink did not take.
var errRecordsStuck = errors.New("the records sink took nothing: exiting without the records still waiting")

// notStarted is an error of serve's before it served anything.
type notStarted struct{ err error }

func (e notStarted) Error() string { return e.err.Error() }
func (e notStarted) Unwrap() error { return e.err }

// startAdmin serves /metrics, /healthz and /readyz until ctx ends, unless
// admin.listen is "off".
func startAdmin(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, adm *admin.Admin, log *zap.Logger) (string, error) {
	if cfg.Admin.Listen == "off" {
		return "off", nil
	}
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return "", fmt.Errorf("admin: listen %s: %w", cfg.Admin.Listen, err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := adm.Serve(ctx, ln); err != nil {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	return ln.Addr().String(), nil
}

// reloadOnHUP reloads the configuration on each SIGHUP until ctx ends. A
// configuration that fails to load or bind is logged and the running one
// stays.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, path string, p parts, lg *logs) {
	// ctx ends when the proxy stops serving; SIGHUPs after that are ignored
	running := p.cfg
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := reload(ctx, path, p, running, lg)
		if err == nil {
			running = cfg
		} else {
			p.adm.ConfigReloaded(false) // before the line: whoever reads it sees the metric
			lg.log.Error("reload refused; the running configuration stays", zap.String("config", path), zap.Error(err))
		}
	}
}

// reload applies the configuration at path over running, the one in
// force: the proxy, then the TIME-WAIT watcher's targets, the admin and
// the log level. It warns of each changed key that only a restart
// applies and of each backend no listener uses, and confirms last, with
// what changed, at a level the new log.level lets through, so that no
// reload goes unconfirmed.
func reload(ctx context.Context, path string, p parts, running *config.Config, lg *logs) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	changed := config.RestartOnly(p.cfg, cfg)
	config.KeepRestartOnly(p.cfg, cfg) // not even in part: the whole file but those
	if err := p.srv.Reload(ctx, cfg); err != nil {
		return nil, err
	}
	p.tw.Update(cfg)
	p.adm.Reconfigure(cfg)
	// The warnings go out at the level that was in force, so that a
	// reload that also raises log.level does not swallow them; the
	// confirmation names the keys again.
	var restart []string
	for _, c := range changed {
		restart = append(restart, c.Key)
		lg.log.Warn("reload: "+c.Key+" changed; it takes effect after a restart",
			zap.String("key", c.Key), zap.String("running", c.Running), zap.String("file", c.File))
	}
	for _, name := range unusedBackends(cfg) {
		lg.log.Warn("reload: backend "+strconv.Quote(name)+" is used by no listener: nothing dials, checks or waits for it until one names it",
			zap.String("backend", name))
	}
	if err := lg.level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
		lg.log.Warn("log.level not changed", zap.Error(err))
	}
	p.adm.ConfigReloaded(true)
	fields := []zap.Field{zap.String("config", path), zap.Int("listeners", len(cfg.Listeners)), zap.Int("backends", len(cfg.Backends)),
		zap.Stringers("addrs", p.srv.Addrs())}
	fields = append(fields, reloadChanges(running, cfg)...)
	if len(restart) > 0 {
		fields = append(fields, zap.Strings("restart_needed", restart))
	}
	lg.log.Log(max(zapcore.InfoLevel, lg.level.Level()), "configuration reloaded", fields...)
	return cfg, nil
}

// reloadChanges names the listeners and backends a reload from old to cur
// added, changed or removed (a changed backend gets new pools and health
// states; its http1 client connections end after their next exchange),
// as log fields; none for what it left alone.
func reloadChanges(old, cur *config.Config) []zap.Field {
	var fields []zap.Field
	add := func(what string, added, changed, removed []string) {
		for _, f := range []struct {
			key   string
			names []string
		}{{what + "_added", added}, {what + "_changed", changed}, {what + "_removed", removed}} {
			if len(f.names) > 0 {
				fields = append(fields, zap.Strings(f.key, f.names))
			}
		}
	}
	a, c, r := diffNamed(old.Listeners, cur.Listeners, func(l config.Listener) string { return l.Name })
	add("listeners", a, c, r)
	a, c, r = diffNamed(old.Backends, cur.Backends, func(b config.Backend) string { return b.Name })
	add("backends", a, c, r)
	return fields
}

// diffNamed compares two lists of named settings: the names only in cur
// (added), in both with other settings (changed), only in old (removed),
// each in its list's order.
func diffNamed[T any](old, cur []T, name func(T) string) (added, changed, removed []string) {
	before := map[string]T{}
	for _, o := range old {
		before[name(o)] = o
	}
	after := map[string]bool{}
	for _, c := range cur {
		n := name(c)
		after[n] = true
		if o, ok := before[n]; !ok {
			added = append(added, n)
		} else if !reflect.DeepEqual(o, c) {
			changed = append(changed, n)
		}
	}
	for _, o := range old {
		if !after[name(o)] {
			removed = append(removed, name(o))
		}
	}
	return added, changed, removed
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

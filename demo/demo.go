package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/closeproxy/closeproxy/procnet"
)

// Options size the demonstration. Zero or negative values take the
// defaults.
type Options struct {
	Conns       int // connections per row; default 200
	Concurrency int // clients at once; default 100
}

// scenario is one row: a workload through a pair of close targets, or
// straight to the backend when direct.
type scenario struct {
	front, back string // as a user writes them; empty when direct
	closer      closer // who ends the HTTP exchange
	direct      bool
}

var scenarios = []scenario{
	{closer: serverFirst, direct: true},
	{front: "proxy", back: "backend", closer: serverFirst},
	{front: "client", back: "backend", closer: serverFirst},
	{front: "nowhere", back: "nowhere", closer: serverFirst},
	{front: "proxy", back: "proxy", closer: serverFirst},
	{closer: clientFirst, direct: true},
	{front: "proxy", back: "backend", closer: clientFirst},
	{front: "nowhere", back: "backend", closer: clientFirst},
	{front: "proxy", back: "proxy", closer: clientFirst},
	{closer: racing, direct: true},
	{front: "proxy", back: "backend", closer: racing},
	{front: "proxy", back: "proxy", closer: racing},
	{front: "auto", back: "auto", closer: racing},
	{front: "nowhere", back: "nowhere", closer: racing},
}

// maxRacing is how many racing clients run at once. The proxy's FIN leaves
// microseconds after the body: with many clients waiting for a CPU, it
// nearly always arrives before the client is scheduled to close; a few at
// a time, FINs do cross.
const maxRacing = 4

func (o Options) raceConcurrency() int { return min(o.Concurrency, maxRacing) }

// clients is how many clients of sc run at once.
func (sc scenario) clients(o Options) int {
	if sc.closer == racing {
		return o.raceConcurrency()
	}
	return o.Concurrency
}

func (sc scenario) name() string {
	if sc.direct {
		return "no proxy"
	}
	return sc.front + " / " + sc.back
}

// row is one scenario's outcome.
type row struct {
	sc     scenario
	load   load
	j      judgement // of a direct row, only the kernel's counts
	strays int       // TIME-WAIT on the row's addresses that no connection of the row names
	// destroyed is how many sockets the kernel closed instead of keeping
	// in TIME-WAIT while the row ran (TCPTimeWaitOverflow, anyone's).
	destroyed int
}

// Timeouts of one row: every wait is bounded.
const (
	recordsTimeout = 10 * time.Second
	settleTimeout  = 5 * time.Second
)

// Run runs every scenario, prints the table to w, and fails when a record
// disagrees with the kernel or a client request failed.
func Run(ctx context.Context, w io.Writer, o Options) error {
	if o.Conns <= 0 {
		o.Conns = 200
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 100
	}
	if err := needKernel(); err != nil {
		return err
	}
	fmt.Fprintf(w, "closeproxy demo: %d short HTTP connections per row on loopback, %d at a time (racing: %d).\n",
		o.Conns, o.Concurrency, o.raceConcurrency())
	fmt.Fprintln(w, "Each teardown record's TIME-WAIT claim is matched to the kernel's sockets by exact 4-tuple.")
	fmt.Fprintln(w)
	var rows []row
	used := ports{}
	pr := progress{w: w, total: len(scenarios)}
	for i, sc := range scenarios {
		if err := ctx.Err(); err != nil {
			return interrupted(i, err)
		}
		from := pr.start(i, sc)
		r, err := runScenario(ctx, sc, o, used)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err() // a row cut short measured nothing
		}
		if err != nil {
			fmt.Fprintln(w, " failed")
			if ctx.Err() != nil {
				return interrupted(i, ctx.Err())
			}
			return fmt.Errorf("scenario %s: %w", sc.describe(), err)
		}
		pr.done(from, r)
		rows = append(rows, r)
	}
	printTable(w, rows)
	printVerdicts(w, rows)
	printNotes(w, rows)
	return verdict(rows)
}

// interrupted is Run's error when ctx ended (a signal) before every row
// ran: no table and no verdict, which would compare rows that measured
// nothing.
func interrupted(done int, err error) error {
	return fmt.Errorf("interrupted after %d of %d rows, nothing concluded: %w", done, len(scenarios), err)
}

// verdict is Run's error: any leg the kernel contradicts, any failed
// request.
func verdict(rows []row) error {
	var wrong, unverified, destroyed, failed int
	for _, r := range rows {
		wrong += r.j.disagree()
		unverified += r.j.unverified
		destroyed += r.destroyed
		failed += r.load.failed
	}
	var errs []error
	if wrong > 0 {
		errs = append(errs, fmt.Errorf("the kernel contradicts %d legs' teardown records", wrong))
	}
	if unverified > 0 {
		errs = append(errs, &uncheckedError{legs: unverified, destroyed: destroyed})
	}
	if failed > 0 {
		errs = append(errs, fmt.Errorf("%d client requests failed", failed))
	}
	if len(errs) == 1 {
		return errs[0] // alone, as itself: a full table is told from a contradiction by its type
	}
	return errors.Join(errs...)
}

// uncheckedError is Run's error when the kernel's TIME-WAIT table was full:
// the kernel destroyed sockets the records claimed, which it can then
// neither confirm nor contradict.
type uncheckedError struct{ legs, destroyed int }

func (e *uncheckedError) Error() string {
	return fmt.Sprintf("%d legs' teardown records could not be checked: the kernel destroyed %d TIME-WAIT sockets while the demo ran, its table (net.ipv4.tcp_max_tw_buckets) being full; run the demo where fewer are held, or in a network namespace of its own", e.legs, e.destroyed)
}

func runScenario(ctx context.Context, sc scenario, o Options, used ports) (row, error) {
	be, err := newBackend(used)
	if err != nil {
		return row{}, err
	}
	defer be.close()
	if sc.direct {
		return runDirect(ctx, sc, be.addr, o)
	}
	p, err := newProxy(ctx, sc, be.addr, used)
	if err != nil {
		return row{}, err
	}
	defer p.stop()
	mark := procnet.MarkTimeWaitOverflow()
	r := row{sc: sc, load: burst(ctx, p.addr, sc.closer, o.Conns, sc.clients(o))}
	if err := p.recs.wait(ctx, r.load.dialed, recordsTimeout); err != nil {
		return r, err
	}
	recs := p.recs.all()
	mine := tuplesOf(recs)
	if err := settle(ctx, mine, settleTimeout); err != nil {
		return r, err
	}
	k, err := takeSnapshot(mine, p.addr, be.addr)
	if err != nil {
		return r, err
	}
	k.accepts = be.accepted()
	r.destroyed = mark.Destroyed()
	r.j = judge(recs, k)
	r.j.excuse(r.destroyed)
	r.strays = k.strays
	return r, nil
}

// runDirect runs a row without the proxy: no records, only what the kernel
// holds for the clients' connections.
func runDirect(ctx context.Context, sc scenario, backend netip.AddrPort, o Options) (row, error) {
	mark := procnet.MarkTimeWaitOverflow()
	r := row{sc: sc, load: burst(ctx, backend, sc.closer, o.Conns, sc.clients(o))}
	mine := map[tuple]holder{}
	for t := range r.load.socks {
		mine[t], mine[t.reverse()] = holderClient, holderBackend
	}
	if err := settle(ctx, mine, settleTimeout); err != nil {
		return r, err
	}
	k, err := takeSnapshot(mine, backend)
	if err != nil {
		return r, err
	}
	r.destroyed = mark.Destroyed()
	r.j.kernel = directCounts(r.load.socks, k.timeWait)
	r.strays = k.strays
	return r, nil
}

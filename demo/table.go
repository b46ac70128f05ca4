package demo

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// width is the widest line the demo prints.
const width = 100

// progress says which row runs, and when it is done, how long it took.
type progress struct {
	w     io.Writer
	total int
}

func (p progress) start(i int, sc scenario) time.Time {
	fmt.Fprintf(p.w, "[%2d/%d] %-52s", i+1, p.total, sc.describe()+" ...")
	return time.Now()
}

func (p progress) done(from time.Time, r row) {
	fmt.Fprintf(p.w, " %d/%d served, %.1fs\n", r.load.ok, r.load.dialed, time.Since(from).Seconds())
}

// describe is a row in words, for progress lines.
func (sc scenario) describe() string {
	who := map[closer]string{serverFirst: "server closes", clientFirst: "client closes", racing: "both close"}[sc.closer]
	if sc.direct {
		return who + ", no proxy"
	}
	return who + ", " + sc.name()
}

func printTable(w io.Writer, rows []row) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "#\tcloses\tfront / back\tok\tclient\tproxy:front\tproxy:back\tbackend\tconfirmed\tboth\tunknown\t")
	for i, r := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", i+1, r.sc.closer, r.sc.name(), r.load.ok,
			r.cell(holderClient), r.cell(holderProxyFront), r.cell(holderProxyBack), r.cell(holderBackend), r.legs())
	}
	tw.Flush()
	for _, l := range []string{
		"closes: who sends the first FIN of the exchange (race: client and server at the same moment).",
		"front / back: time_wait of the front leg (client to proxy) and the back leg (proxy to backend).",
		"client … backend: TIME-WAIT sockets the kernel holds on the row's own connections / what the" +
			" teardown records say; proxy:front and proxy:back are the proxy's ends of each leg.",
		"confirmed: legs (two a connection) whose record the kernel confirms by 4-tuple; both: FINs" +
			" crossed, TIME-WAIT on each side; unknown: the record could not tell the order.",
	} {
		fmt.Fprint(w, wrap(l, "  "))
	}
}

// cell is one holder's kernel count beside the records' claim.
func (r row) cell(h holder) string {
	if r.sc.direct {
		if h == holderProxyFront || h == holderProxyBack {
			return "-"
		}
		return fmt.Sprintf("%d/-", r.j.kernel[h])
	}
	return fmt.Sprintf("%d/%d", r.j.kernel[h], r.j.claims[h])
}

func (r row) legs() string {
	if r.sc.direct {
		return "-\t-\t-"
	}
	return fmt.Sprintf("%d/%d\t%d\t%d", r.j.exact, r.j.legs, r.j.both, r.j.unknown)
}

// printVerdicts says, row by row, where TIME-WAIT went compared with the
// same clients without the proxy, and whether the records were true.
func printVerdicts(w io.Writer, rows []row) {
	fmt.Fprintln(w)
	base := map[closer]row{}
	for i, r := range rows {
		if r.sc.direct {
			base[r.sc.closer] = r
			continue
		}
		fmt.Fprint(w, wrap(fmt.Sprintf("row %d, %s: %s", i+1, r.sc.describe(), r.verdict(base[r.sc.closer])), "    "))
	}
}

// verdict compares r with base, the same clients straight to the backend.
func (r row) verdict(base row) string {
	var parts []string
	for _, h := range []holder{holderClient, holderBackend} {
		was, now := base.j.kernel[h], r.j.kernel[h]
		switch {
		case now < was:
			parts = append(parts, fmt.Sprintf("TIME-WAIT moved off the %s: %d → %d", h, was, now))
		case now > was:
			parts = append(parts, fmt.Sprintf("TIME-WAIT put on the %s: %d → %d", h, was, now))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "client and backend hold as many as without the proxy")
	}
	if p := r.j.kernel[holderProxyFront] + r.j.kernel[holderProxyBack]; p > 0 {
		held := fmt.Sprintf("the proxy holds %d", p)
		if n := r.j.eofFirst; n > 0 {
			held += fmt.Sprintf(" (%d where the target put it elsewhere, but the peer may have waited for EOF: the proxy's FIN goes first then, rule 1, peer_may_await_eof)", n)
		}
		parts = append(parts, held)
	}
	switch {
	case r.j.disagree() > 0:
		parts = append(parts, fmt.Sprintf("RECORDS WRONG on %d legs", r.j.disagree()))
	case r.j.unverified > 0:
		parts = append(parts, fmt.Sprintf("records UNCHECKED on %d legs: the kernel destroyed TIME-WAIT sockets meanwhile", r.j.unverified))
	case r.load.failed > 0:
		parts = append(parts, fmt.Sprintf("%d REQUESTS FAILED", r.load.failed))
	default:
		parts = append(parts, "records true")
	}
	return strings.Join(parts, "; ")
}

func (h holder) String() string {
	return [...]string{"client", "proxy (front)", "proxy (back)", "backend"}[h]
}

// wrap breaks s into lines of at most width columns, the later ones
// indented by indent.
func wrap(s, indent string) string {
	var b strings.Builder
	line := 0
	for i, word := range strings.Fields(s) {
		n := len([]rune(word))
		switch {
		case i == 0:
		case line+1+n > width:
			b.WriteString("\n" + indent)
			line = len(indent)
		default:
			b.WriteByte(' ')
			line++
		}
		b.WriteString(word)
		line += n
	}
	b.WriteByte('\n')
	return b.String()
}

// maxWrong is how many disagreements a row lists.
const maxWrong = 5

// printNotes says what the table cannot: failed requests, 4-tuples reused
// within a row, TIME-WAIT no connection names, and every disagreement
// (the first few of each row).
func printNotes(w io.Writer, rows []row) {
	for i, r := range rows {
		name := fmt.Sprintf("row %d, %s", i+1, r.sc.describe())
		note := func(format string, a ...any) { fmt.Fprint(w, wrap(name+": "+fmt.Sprintf(format, a...), "    ")) }
		if r.load.failed > 0 {
			note("%d requests failed; the first: %v", r.load.failed, r.load.firstErr)
		}
		if r.j.reused > 0 {
			note("%d legs not judged: a later connection reused their 4-tuple", r.j.reused)
		}
		if r.strays > 0 {
			note("%d TIME-WAIT on its ports but of none of its connections (earlier run?): ignored", r.strays)
		}
		if r.destroyed > 0 {
			note("the kernel destroyed %d TIME-WAIT sockets while the row ran (its table, tcp_max_tw_buckets, was full): its counts may be short by as many", r.destroyed)
		}
		for i, why := range r.j.disagreements() {
			if i == maxWrong {
				note("… and %d more disagreements", r.j.disagree()-maxWrong)
				break
			}
			note("%s", why)
		}
	}
}

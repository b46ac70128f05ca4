package doctor

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/closeproxy/closeproxy/policy"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a person at a terminal.
func (r *Report) WriteText(w io.Writer) error {
	p := &printer{w: w}
	p.timeWait(r.TimeWait)
	p.settings(r.Settings)
	if r.Config != "" || len(r.Legs) > 0 {
		p.legs(r)
	}
	p.warnings(r.Warnings)
	p.recommendations(r.Recommendations)
	if len(r.Unread) > 0 {
		p.line("\nNot read")
		for _, u := range r.Unread {
			p.line("  - " + u)
		}
	}
	return p.err
}

// printer writes lines and keeps the first error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format+"\n", args...)
	}
}

// table writes rows of tab-separated cells, aligned.
func (p *printer) table(rows []string) {
	if p.err != nil {
		return
	}
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	p.err = tw.Flush()
}

func (p *printer) timeWait(tw TimeWait) {
	p.line("TIME-WAIT on this host (sock_diag)")
	if tw.Error != "" {
		p.line("  not read: %s", tw.Error)
		return
	}
	total := fmt.Sprintf("  %d sockets", tw.Total)
	if tw.MaxBuckets > 0 {
		total += fmt.Sprintf(", %s of tcp_max_tw_buckets %d", percent(tw.Total, tw.MaxBuckets), tw.MaxBuckets)
	}
	if tw.FinWait2 > 0 {
		total += fmt.Sprintf(" (and %d orphaned FIN-WAIT-2)", tw.FinWait2)
	}
	p.line("%s", total)
	p.line("  accepting side, by listening port: %d (cheap: no port pinned)", tw.Accepting)
	rows := []string{}
	for _, pc := range tw.ByListenPort {
		rows = append(rows, fmt.Sprintf("    :%d\t%d", pc.Port, pc.Count))
	}
	p.table(rows)
	p.line("  dialing side, by destination: %d toward %d destinations (each pins a local port for %d s)", tw.Dialing, tw.Destinations, timeWaitSeconds)
	rows = rows[:0]
	for _, d := range tw.TopDestinations {
		share := "?"
		if tw.UsablePorts > 0 {
			share = fmt.Sprintf("%.1f%%", 100*d.Share)
		}
		rows = append(rows, fmt.Sprintf("    %s\t%d\t%s of %d usable ports", d.Addr, d.Count, share, tw.UsablePorts))
	}
	p.table(rows)
}

func (p *printer) settings(ss []Setting) {
	p.line("\nSettings")
	for _, s := range ss {
		v := s.Value
		switch {
		case s.Error != "":
			v = "(unread: " + s.Error + ")"
		case v == "":
			v = "(empty)"
		}
		p.line("  %s = %s", s.Name, v)
		p.line("      %s", s.Means)
	}
}

func (p *printer) legs(r *Report) {
	p.line("\nLegs of %s at %g new connections/s per listener", orWord(r.Config, "the configuration"), r.Rate)
	for _, lg := range r.Legs {
		p.line("  %s, %s leg toward %s, time_wait = %q, fallback = %q%s", lg.subject(), lg.Leg,
			lg.Destination, lg.TimeWait, lg.Fallback, prefixed(", protocol ", lg.Protocol))
		p.line("    TIME-WAIT %s", endings(lg))
		if lg.Pinned > 0 {
			p.line("    dialer's ports pinned toward %s: ≈%d of %d usable (%s)", lg.Destination, lg.Pinned, lg.Budget, percent(lg.Pinned, lg.Budget))
		}
		if lg.Note != "" {
			p.line("    note: %s", lg.Note)
		}
	}
}

// endings says who holds a leg's TIME-WAIT for each way it may end. For a
// leg whose policy withholds the proxy's FIN it says what the proxy-first
// case assumes (the peer closes within the grace) and what a peer silent
// past it gets, which may differ.
func endings(lg Leg) string {
	peer := policy.Leg(lg.Leg).Peer()
	first := fmt.Sprintf("when the %s ends first: %s", peer, holderWord(lg.PeerFirst, lg.Dialer))
	if lg.GraceOut == "" {
		return fmt.Sprintf("%s; when the proxy ends first: %s", first, holderWord(lg.ProxyFirst, lg.Dialer))
	}
	out := holderWord(lg.GraceOut, lg.Dialer)
	if lg.GraceOutClientReading != "" {
		out += " if the client had read the whole answer, else " + holderWord(lg.GraceOutClientReading, lg.Dialer)
	}
	return fmt.Sprintf("%s; when the proxy ends first and the %s closes within the grace: %s; when it does not (grace out): %s",
		first, peer, holderWord(lg.ProxyFirst, lg.Dialer), out)
}

// section writes a heading and, under it, "none" for an empty list.
func (p *printer) section(heading string, n int) {
	p.line("\n%s", heading)
	if n == 0 {
		p.line("  none")
	}
}

func (p *printer) warnings(ws []Warning) {
	p.section("Warnings", len(ws))
	for _, w := range ws {
		p.line("  ! %s", w.Text)
	}
}

func (p *printer) recommendations(rs []Recommendation) {
	p.section("Recommendations (never applied; review each before use)", len(rs))
	for _, r := range rs {
		p.line("  %s", r.Line)
		p.line("      why: %s", r.Why)
	}
}

// holderWord names who holds TIME-WAIT and what it costs there.
func holderWord(holder, dialer string) string {
	switch holder {
	case "none":
		return "nowhere"
	case "auto":
		return "chosen live (auto)"
	case dialer:
		return holder + " (dialer: pins a port)"
	}
	return holder + " (accepted: cheap)"
}

func percent(n, of int) string {
	if of <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(of))
}

func orWord(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}

package demo

import (
	"fmt"
	"io"
	"text/tabwriter"
)

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "front / back\tcloses\tok\tfail\tclient\tproxy·front\tproxy·back\tbackend\texact\tboth\tunknown\tverdict\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.sc.name(), r.sc.closer, r.load.ok, r.load.failed,
			r.cell(holderClient), r.cell(holderProxyFront), r.cell(holderProxyBack), r.cell(holderBackend),
			r.legs(), r.verdict())
	}
	tw.Flush()
	fmt.Fprintln(w, "client…backend: TIME-WAIT on the row's own 4-tuples, kernel/records; closes: who closes first (race: both).")
	fmt.Fprintln(w, "exact: legs (2 a connection) the kernel confirms; both: FINs crossed; unknown: the record could not tell.")
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

func (r row) verdict() string {
	switch {
	case r.j.disagree() > 0:
		return fmt.Sprintf("NO: %d", r.j.disagree())
	case r.load.failed > 0:
		return "FAILED"
	case r.sc.direct:
		return "-"
	}
	return "agree"
}

// maxWrong is how many disagreements a row lists.
const maxWrong = 5

// printNotes says what the table cannot: failed requests, 4-tuples reused
// within a row, TIME-WAIT no connection names, and every disagreement
// (the first few of each row).
func printNotes(w io.Writer, rows []row) {
	for _, r := range rows {
		name := fmt.Sprintf("%s, %s closes", r.sc.name(), r.sc.closer)
		if r.load.failed > 0 {
			fmt.Fprintf(w, "%s: %d requests failed; the first: %v\n", name, r.load.failed, r.load.firstErr)
		}
		if r.j.reused > 0 {
			fmt.Fprintf(w, "%s: %d legs not judged: a later connection reused their 4-tuple\n", name, r.j.reused)
		}
		if r.strays > 0 {
			fmt.Fprintf(w, "%s: %d TIME-WAIT on its ports but of none of its connections (earlier run?): ignored\n", name, r.strays)
		}
		for i, why := range r.j.wrong {
			if i == maxWrong {
				fmt.Fprintf(w, "%s: … and %d more disagreements\n", name, len(r.j.wrong)-maxWrong)
				break
			}
			fmt.Fprintf(w, "%s: %s\n", name, why)
		}
	}
}

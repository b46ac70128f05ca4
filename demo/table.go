package demo

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\t\t\tkernel\t\t\t\trecords\t\t\t\t\t")
	fmt.Fprintln(tw, "front / back\tcloses first\tok\tclient\tproxy·front\tproxy·back\tbackend\tclient\tproxy·front\tproxy·back\tbackend\tagree\t")
	for _, r := range rows {
		k, c := r.kernel, r.records
		claims, agree := "-\t-\t-\t-", "-"
		if !r.sc.direct {
			claims = fmt.Sprintf("%d\t%d\t%d\t%d", c.client, c.proxyFront, c.proxyBack, c.backend)
			agree = "yes"
			if k != c {
				agree = "NO"
			}
		}
		ok := strconv.Itoa(r.ok)
		if r.failed > 0 {
			ok += fmt.Sprintf(" (%d failed)", r.failed)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t\n", r.sc.name(), r.sc.closer, ok,
			k.client, k.proxyFront, k.proxyBack, k.backend, claims, agree)
	}
	tw.Flush()
	fmt.Fprintln(w, `
kernel: TIME-WAIT sockets counted by sock_diag; records: the teardown records' time_wait.
client and backend: TIME-WAIT there pins the client's ports (it dialed) or costs the
web server a table slot. proxy·front: held by the proxy as the accepting side: cheap.
proxy·back: held by the proxy as the dialing side: pins its ports toward the backend.
"nowhere" ends with a safe reset once every byte is acknowledged: no TIME-WAIT at all.`)
}

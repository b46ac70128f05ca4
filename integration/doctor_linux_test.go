package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/closeproxy/closeproxy/doctor"
)

// TestDoctorCountsMatchSS runs a known workload straight from lb to nginx
// in web — N connections the client closes first, M the server closes
// first — then runs `closeproxy doctor -json` in each namespace and
// compares its TIME-WAIT figures with ss's: lb dialed, so its N sit on the
// dialing side toward web:80; web accepted, so its M sit on the accepting
// side under port 80. Doctor runs once as root and once as nobody: it
// needs no privileges to read them.
func TestDoctorCountsMatchSS(t *testing.T) {
	const clientFirst, serverFirst, size = 150, 100, 1000
	topo := newTopology(t)
	web := startNginx(t, topo, topo.Web, addrPort(topo.WebAddr, 80), NginxOpts{Keepalive: true, BlobSizes: []int{size}})
	for _, w := range []struct {
		n           int
		path, close string
	}{{clientFirst, "", "client"}, {serverFirst, "/close", "server"}} {
		requireAllOK(t, runLoad(t, topo, topo.LB, LoadOpts{
			Addr: web.Addr.String(), N: w.n, C: 10, Path: w.path + web.BlobPath(size),
			Close: w.close, ExpectBytes: size,
		}), w.n)
	}
	lbAll, _, webAll := settledTimeWait(t, topo, "", "")
	lbDial := countTimeWait(t, topo, topo.LB, "dport = :80")
	webAccept := countTimeWait(t, topo, topo.Web, "sport = :80")
	t.Logf("ss: lb %d TIME-WAIT (%d toward :80), web %d (%d on :80)", lbAll, lbDial, webAll, webAccept)
	between(t, "ss: lb TIME-WAIT toward web:80", lbDial, clientFirst*95/100, clientFirst)
	between(t, "ss: web TIME-WAIT on :80", webAccept, serverFirst*95/100, serverFirst)

	for _, user := range []string{"root", "nobody"} {
		lb, srv := runDoctor(t, topo, topo.LB, user), runDoctor(t, topo, topo.Web, user)
		checkSide(t, user+" lb", lb.TimeWait, lbAll, 0, lbDial)
		checkSide(t, user+" web", srv.TimeWait, webAll, webAccept, 0)
		if d := lb.TimeWait.TopDestinations; len(d) != 1 || d[0].Addr != web.Addr || d[0].Count != lbDial {
			t.Errorf("%s lb: top destinations %+v, want %s with %d", user, d, web.Addr, lbDial)
		}
		if p := srv.TimeWait.ByListenPort; len(p) != 1 || p[0] != (doctor.PortCount{Port: 80, Count: webAccept}) {
			t.Errorf("%s web: by listening port %+v, want :80 with %d", user, p, webAccept)
		}
		if len(lb.Unread)+len(srv.Unread) > 0 {
			t.Errorf("%s: doctor could not read %q %q", user, lb.Unread, srv.Unread)
		}
	}
}

func checkSide(t *testing.T, who string, tw doctor.TimeWait, total, accepting, dialing int) {
	t.Helper()
	if tw.Error != "" || tw.Total != total || tw.Accepting != accepting || tw.Dialing != dialing {
		t.Errorf("%s: doctor counts %d TIME-WAIT (%d accepting, %d dialing, error %q); ss counts %d (%d, %d)",
			who, tw.Total, tw.Accepting, tw.Dialing, tw.Error, total, accepting, dialing)
	}
}

// TestDoctorWarnsBackendPortBudget judges a configuration in the proxy
// namespace, whose port range is narrowed to 1000 ports: at 1000
// connections/s a back leg with time_wait = "proxy" pins ≈60000 of them
// and doctor warns; with time_wait = "backend" the warning is gone.
func TestDoctorWarnsBackendPortBudget(t *testing.T) {
	topo := newTopology(t)
	topo.Sysctl(t, topo.Proxy, "net.ipv4.ip_local_port_range", "40000 40999")
	webAddr := addrPort(topo.WebAddr, 80)
	for _, tc := range []struct {
		back string
		warn bool
	}{{"proxy", true}, {"backend", false}} {
		cfg := closeproxyConfig(ListenerOpts{
			Name: "app", Listen: addrPort(topo.ProxyFront, 8080), Backend: webAddr,
			Front: CloseOpts{TimeWait: "nowhere"}, Back: CloseOpts{TimeWait: tc.back},
		})
		path := filepath.Join(t.TempDir(), "closeproxy.toml")
		writeCloseproxyConfig(t, path, cfg)
		rep := runDoctor(t, topo, topo.Proxy, "root", "-config", path, "-rate", "1000")
		if rep.TimeWait.UsablePorts != 1000 {
			t.Fatalf("doctor reads %d usable ports in %s, want the narrowed 1000", rep.TimeWait.UsablePorts, topo.Proxy)
		}
		var budget []doctor.Warning
		for _, w := range rep.Warnings {
			if w.Kind == "port_budget" {
				budget = append(budget, w)
			}
		}
		switch {
		case tc.warn && (len(budget) != 1 || budget[0].Leg != "back" || budget[0].Subject != `backend "app"`):
			t.Errorf("back leg time_wait = %q: port budget warnings %+v, want one about backend \"app\"", tc.back, budget)
		case !tc.warn && len(rep.Warnings) != 0:
			t.Errorf("back leg time_wait = %q: warnings %+v, want none", tc.back, rep.Warnings)
		}
		t.Logf("time_wait = %q: warnings %+v; recommendations %+v", tc.back, rep.Warnings, rep.Recommendations)
	}
}

// runDoctor runs `closeproxy doctor -json args…` in namespace ns as root or
// as nobody, and decodes its report.
func runDoctor(t testing.TB, topo *Topology, ns, user string, args ...string) *doctor.Report {
	t.Helper()
	bin := buildBinary(t, "./cmd/closeproxy")
	cmd := []string{bin}
	if user == "nobody" {
		cmd = []string{needTool(t, "setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", worldReadable(t, bin)}
	}
	out := topo.Exec(t, ns, append(cmd, append([]string{"doctor", "-json"}, args...)...)...)
	var rep doctor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("doctor -json in %s: %v\n%s", ns, err, out)
	}
	return &rep
}

// worldReadable copies bin where nobody may run it: the build directory
// is private to root.
func worldReadable(t testing.TB, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "closeproxy-doctor-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "closeproxy")
	if out, err := exec.Command("cp", bin, path).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v: %s", bin, err, out)
	}
	if err := os.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

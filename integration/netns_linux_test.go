package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cmdTimeout bounds every short command the harness runs (ip, ss, sysctl,
// the load client): no test hangs on a stuck child.
const cmdTimeout = 60 * time.Second

// needRoot skips the test unless it runs as root with `ip`, `ss` and
// `sysctl` at hand: namespaces and veth pairs need them.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "integration: needs root to create network namespaces (run the tests as root, as CI does)")
	}
	for _, tool := range []string{"ip", "ss", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, fmt.Sprintf("integration: needs %q in PATH (iproute2, procps): %v", tool, err))
		}
	}
}

// needTool skips the test unless the named program is installed.
func needTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		missing(t, fmt.Sprintf("integration: needs %q (apt-get install %s, or its package): %v", name, name, err))
	}
	return path
}

// missing skips a test whose prerequisite is absent, except under CI
// (CI=true), where .ci/run installs every prerequisite: there a missing one
// is a broken setup, and a skip would turn it into a green run.
func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: .ci/run should have installed it)")
	}
	t.Skip(why)
}

// Topology is three hosts made of fresh network namespaces:
//
//	lb 10.231.1.1 ── 10.231.1.2 proxy 10.231.2.2 ── 10.231.2.1 web
//
// proxy forwards IPv4 between its two links, so lb also reaches web
// directly (the "direct" baseline): through the proxy namespace as a router,
// which keeps no sockets for forwarded packets.
//
// The addresses are fixed: each namespace has its own stack, so concurrent
// runs cannot collide on them; only the namespace names must be unique.
type Topology struct {
	// Namespace names, unique per topology ("cpt" + random + role).
	LB, Proxy, Web string

	LBAddr     netip.Addr // lb's address on the lb–proxy link
	ProxyFront netip.Addr // proxy's address facing lb
	ProxyBack  netip.Addr // proxy's address facing web
	WebAddr    netip.Addr // web's address on the proxy–web link
}

// newTopology creates the three namespaces and their links. Cleanup deletes
// each namespace by its exact name, even when the test fails; processes
// started in them afterwards are stopped first (cleanups run last-in
// first-out).
func newTopology(t testing.TB) *Topology {
	t.Helper()
	needRoot(t)
	id := randomHex(t, 3)
	topo := &Topology{
		LB:         "cpt" + id + "-lb",
		Proxy:      "cpt" + id + "-proxy",
		Web:        "cpt" + id + "-web",
		LBAddr:     netip.MustParseAddr("10.231.1.1"),
		ProxyFront: netip.MustParseAddr("10.231.1.2"),
		ProxyBack:  netip.MustParseAddr("10.231.2.2"),
		WebAddr:    netip.MustParseAddr("10.231.2.1"),
	}
	for _, ns := range []string{topo.LB, topo.Proxy, topo.Web} {
		addNetns(t, ns)
	}
	// Both ends of each veth pair are created inside the namespaces, so the
	// root namespace never sees them and fixed interface names cannot clash.
	runIP(t, "-n", topo.LB, "link", "add", "lb0", "type", "veth", "peer", "name", "px0", "netns", topo.Proxy)
	runIP(t, "-n", topo.Proxy, "link", "add", "px1", "type", "veth", "peer", "name", "web0", "netns", topo.Web)
	topo.addr(t, topo.LB, "lb0", topo.LBAddr)
	topo.addr(t, topo.Proxy, "px0", topo.ProxyFront)
	topo.addr(t, topo.Proxy, "px1", topo.ProxyBack)
	topo.addr(t, topo.Web, "web0", topo.WebAddr)
	runIP(t, "-n", topo.LB, "route", "add", "10.231.2.0/24", "via", topo.ProxyFront.String())
	runIP(t, "-n", topo.Web, "route", "add", "10.231.1.0/24", "via", topo.ProxyBack.String())
	topo.Sysctl(t, topo.Proxy, "net.ipv4.ip_forward", "1")
	watchResets(t, topo, topo.Proxy)
	return topo
}

func addNetns(t testing.TB, ns string) {
	t.Helper()
	runIP(t, "netns", "add", ns)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		if out, err := commandContext(ctx, "ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("delete namespace %s: %v: %s", ns, err, out)
		}
	})
	runIP(t, "-n", ns, "link", "set", "lo", "up")
}

func (topo *Topology) addr(t testing.TB, ns, dev string, a netip.Addr) {
	t.Helper()
	runIP(t, "-n", ns, "addr", "add", netip.PrefixFrom(a, 24).String(), "dev", dev)
	runIP(t, "-n", ns, "link", "set", dev, "up")
}

// Cmd returns a command that runs args inside namespace ns. `ip netns exec`
// execs the program in place, so the command's PID is the program's own.
// The program is killed if the test binary dies (Pdeathsig).
func (topo *Topology) Cmd(ns string, args ...string) *exec.Cmd {
	return topo.cmdContext(context.Background(), ns, args...)
}

func (topo *Topology) cmdContext(ctx context.Context, ns string, args ...string) *exec.Cmd {
	return commandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// Exec runs args inside namespace ns, bounded by cmdTimeout, and returns its
// standard output. Failure fails the test with the command's stderr.
func (topo *Topology) Exec(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := topo.run(ns, args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v", ns, strings.Join(args, " "), err)
	}
	return out
}

// run is Exec returning the error (with stderr) instead of failing.
func (topo *Topology) run(ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := topo.cmdContext(ctx, ns, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Sysctl sets key to value inside namespace ns (net.* keys are per
// namespace).
func (topo *Topology) Sysctl(t testing.TB, ns, key, value string) {
	t.Helper()
	topo.Exec(t, ns, "sysctl", "-qw", key+"="+value)
}

// commandContext is exec.CommandContext with the harness's safety net: the
// child gets SIGKILL if the test binary dies before its cleanups run.
func commandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func runIP(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := commandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random name: %v", err)
	}
	return hex.EncodeToString(b)
}

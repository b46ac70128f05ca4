package check

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// deployDir is the repository's deploy/ folder.
const deployDir = "../.."

// manifests decodes every YAML file under deploy/, by path.
func manifests(t *testing.T) map[string][]any {
	t.Helper()
	out := map[string][]any{}
	err := filepath.WalkDir(deployDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		objs, err := Decode(data)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			return nil
		}
		out[path] = objs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no manifest found under deploy/")
	}
	return out
}

// Every manifest decodes strictly into the real API types.
func TestManifestsDecodeStrictly(t *testing.T) {
	for path, objs := range manifests(t) {
		if len(objs) == 0 {
			t.Errorf("%s: no document", path)
		}
	}
}

// The check catches what kubectl apply would only warn about.
func TestDecodeRefuses(t *testing.T) {
	cases := map[string]string{
		"unknown field":   "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selector: {app: web}\n  ports:\n    - {port: 80, targetPort: 8080, protocl: TCP}\n",
		"misplaced field": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  terminationGracePeriodSeconds: 60\n",
		"duplicate key":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nmetadata: {name: y}\n",
		"unknown kind":    "apiVersion: v1\nkind: Secrets\nmetadata: {name: x}\n",
		"wrong type":      "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: 80\n",
	}
	for name, doc := range cases {
		if _, err := Decode([]byte("# a comment\n---\n" + doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	objs, err := Decode([]byte("---\n# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"))
	if err != nil || len(objs) != 1 {
		t.Errorf("two documents, one empty: %d objects, %v", len(objs), err)
	}
}

// deployment returns the web Deployment and its containers by name.
func deployment(t *testing.T) (*appsv1.Deployment, map[string]corev1.Container) {
	t.Helper()
	for _, objs := range manifests(t) {
		for _, o := range objs {
			if d, ok := o.(*appsv1.Deployment); ok {
				byName := map[string]corev1.Container{}
				for _, c := range append(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers...) {
					byName[c.Name] = c
				}
				return d, byName
			}
		}
	}
	t.Fatal("no Deployment under deploy/")
	return nil, nil
}

// flagValue returns the value after name in args, or "".
func flagValue(args []string, name string) string {
	if i := slices.Index(args, name); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// On termination the proxy drains first (its preStop waits for its
// sessions), nginx stops only after that (its preStop waits for the
// drain's flag file on a shared volume), and the grace period covers the
// drain plus the proxy's shutdown_timeout.
func TestTerminationDrainsBeforeNginxStops(t *testing.T) {
	d, cs := deployment(t)
	cp, nginx := cs["closeproxy"], cs["nginx"]
	if slices.ContainsFunc(d.Spec.Template.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "closeproxy" }) {
		t.Error("closeproxy is a native sidecar: its preStop would run only after nginx exited")
	}
	if cp.Lifecycle == nil || cp.Lifecycle.PreStop == nil || cp.Lifecycle.PreStop.Exec == nil {
		t.Fatal("closeproxy has no preStop exec hook")
	}
	args := cp.Lifecycle.PreStop.Exec.Command
	if len(args) < 2 || args[1] != "drain" || !slices.Contains(args, "-wait") {
		t.Fatalf("closeproxy preStop %q: want closeproxy drain -wait", args)
	}
	drainTimeout, err := time.ParseDuration(flagValue(args, "-timeout"))
	if err != nil {
		t.Fatalf("closeproxy preStop -timeout: %v", err)
	}
	if v := flagValue(args, "-delay"); v != "" { // the listeners stay open this long first
		delay, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("closeproxy preStop -delay: %v", err)
		}
		drainTimeout += delay
	}
	doneFile := flagValue(args, "-done-file")
	if doneFile == "" {
		t.Fatal("closeproxy preStop writes no -done-file for nginx to wait on")
	}
	if nginx.Lifecycle == nil || nginx.Lifecycle.PreStop == nil || nginx.Lifecycle.PreStop.Exec == nil {
		t.Fatal("nginx has no preStop exec hook")
	}
	script := strings.Join(nginx.Lifecycle.PreStop.Exec.Command, " ")
	wait, quit := strings.Index(script, doneFile), strings.Index(script, "nginx -s quit")
	if wait < 0 || quit < wait {
		t.Errorf("nginx preStop %q: want it to wait for %s before nginx -s quit", script, doneFile)
	}
	if m := regexp.MustCompile(`-lt (\d+)`).FindStringSubmatch(script); m == nil {
		t.Errorf("nginx preStop %q: its wait has no bound", script)
	} else if n, _ := strconv.Atoi(m[1]); time.Duration(n)*time.Second <= drainTimeout {
		t.Errorf("nginx waits %ds, not longer than the drain's %s", n, drainTimeout)
	}
	dir := filepath.Dir(doneFile)
	if !mounts(cp, dir, false) || !mounts(nginx, dir, true) {
		t.Errorf("%s is not one volume mounted in both containers (writable in closeproxy's)", dir)
	}
	grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	shutdown := shutdownTimeout(t)
	// Ending by policy once shutdown_timeout ran out takes at most 3s plus
	// the longest drain_timeout, which the ConfigMap leaves at its 1s.
	if need := drainTimeout + shutdown + 4*time.Second; grace == nil || time.Duration(*grace)*time.Second < need {
		t.Errorf("terminationGracePeriodSeconds %v, want at least the drain %s + shutdown_timeout %s + 4s", grace, drainTimeout, shutdown)
	}
}

// mounts reports that c mounts a volume at dir (readOnly as given); the
// volume's name is not compared, the path is what the hooks share.
func mounts(c corev1.Container, dir string, readOnly bool) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.MountPath == dir && m.ReadOnly == readOnly
	})
}

// shutdownTimeout reads shutdown_timeout from the ConfigMap's TOML.
func shutdownTimeout(t *testing.T) time.Duration {
	t.Helper()
	for _, objs := range manifests(t) {
		for _, o := range objs {
			cm, ok := o.(*corev1.ConfigMap)
			if !ok {
				continue
			}
			m := regexp.MustCompile(`(?m)^shutdown_timeout = "([^"]+)"`).FindStringSubmatch(cm.Data["closeproxy.toml"])
			if m == nil {
				t.Fatal("the ConfigMap sets no shutdown_timeout")
			}
			d, err := time.ParseDuration(m[1])
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatal("no ConfigMap under deploy/")
	return 0
}

// What earlier fixes made the manifests apply and run as written stays.
func TestManifestsKeepWhatWorks(t *testing.T) {
	d, cs := deployment(t)
	cp := cs["closeproxy"]
	if cp.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy %q, want IfNotPresent (a locally built image)", cp.ImagePullPolicy)
	}
	if sp := d.Spec.Template.Spec.SecurityContext; sp == nil || sp.SeccompProfile == nil || sp.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod seccompProfile is not RuntimeDefault")
	}
	if sc := cp.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Error("closeproxy has no numeric, non-root runAsUser")
	}
	gomem := slices.ContainsFunc(cp.Env, func(e corev1.EnvVar) bool {
		return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
	})
	if !gomem {
		t.Error("GOMEMLIMIT does not follow limits.memory through the downward API")
	}
	procs := slices.ContainsFunc(cp.Env, func(e corev1.EnvVar) bool {
		return e.Name == "GOMAXPROCS" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
			e.ValueFrom.ResourceFieldRef.Resource == "requests.cpu" && e.ValueFrom.ResourceFieldRef.Divisor.String() == "1"
	})
	if !procs {
		t.Error("GOMAXPROCS does not follow requests.cpu through the downward API: Go would size its scheduler by the node's cores (or a CPU limit, but never below 2)")
	}
	for _, objs := range manifests(t) {
		for _, o := range objs {
			if s, ok := o.(*corev1.Service); ok {
				for _, p := range s.Spec.Ports {
					if p.TargetPort.IntValue() != 8080 {
						t.Errorf("Service port %q targetPort %s, want the number 8080", p.Name, p.TargetPort.String())
					}
				}
			}
		}
	}
}

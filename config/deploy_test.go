package config

import (
	"os"
	"strings"
	"testing"
)

// The configuration shipped in the Kubernetes ConfigMap must load.
func TestKubernetesConfigMapLoads(t *testing.T) {
	data, err := os.ReadFile("../deploy/kubernetes/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(data), "closeproxy.toml: |\n")
	if !ok {
		t.Fatal("configmap.yaml has no closeproxy.toml block")
	}
	var toml strings.Builder
	for _, line := range strings.Split(block, "\n") {
		if line != "" && !strings.HasPrefix(line, "    ") {
			break // the block scalar ends at the first less indented line
		}
		toml.WriteString(strings.TrimPrefix(line, "    ") + "\n")
	}
	cfg, err := Parse([]byte(toml.String()), "configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != "0.0.0.0:9901" || cfg.Backends[0].Protocol != ProtocolHTTP1 {
		t.Errorf("admin %q protocol %q", cfg.Admin.Listen, cfg.Backends[0].Protocol)
	}
}

// The image's USER must be numeric: a kubelet with runAsNonRoot cannot
// verify a user name and refuses to start the container.
func TestDockerfileUserIsNumeric(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	users := 0
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "USER" {
			continue
		}
		users++
		for _, id := range strings.Split(f[1], ":") {
			if id == "" || strings.Trim(id, "0123456789") != "" || id == "0" {
				t.Errorf("Dockerfile %q: want a numeric, non-root uid:gid", line)
			}
		}
	}
	if users == 0 {
		t.Error("Dockerfile sets no USER: the image would run as root")
	}
}

// The image's default configuration is a working sidecar: it accepts on
// :8080, forwards to the web server on 127.0.0.1:80, and serves the admin
// endpoints on every address (the kubelet probes the pod IP); and the
// Dockerfile installs it where the image's CMD reads it.
func TestImageDefaultConfigIsASidecar(t *testing.T) {
	cfg, err := Load("../deploy/sidecar.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Listeners) != 1 || cfg.Listeners[0].Listen != ":8080" {
		t.Errorf("listeners %+v, want one on :8080", cfg.Listeners)
	}
	if len(cfg.Backends) != 1 || cfg.Backends[0].Address != "127.0.0.1:80" || cfg.Listeners[0].Backend != cfg.Backends[0].Name {
		t.Errorf("backends %+v, want the listener's on 127.0.0.1:80", cfg.Backends)
	}
	if cfg.Admin.Listen != "0.0.0.0:9901" {
		t.Errorf("admin.listen %q, want 0.0.0.0:9901", cfg.Admin.Listen)
	}
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	if !strings.Contains(df, "COPY --from=build /src/deploy/sidecar.toml /etc/closeproxy/closeproxy.toml") ||
		!strings.Contains(df, `CMD ["run", "-config", "/etc/closeproxy/closeproxy.toml"]`) {
		t.Error("the Dockerfile does not install deploy/sidecar.toml as the configuration its CMD runs")
	}
	// The HEALTHCHECK asks where the configuration it runs says: a
	// mounted file with another admin.listen (or "off") would otherwise
	// be reported unhealthy, or healthy for the wrong reason.
	if !strings.Contains(df, `CMD ["/closeproxy", "healthcheck", "-config", "/etc/closeproxy/closeproxy.toml"]`) {
		t.Error("the Dockerfile's HEALTHCHECK does not ask the admin.listen of /etc/closeproxy/closeproxy.toml")
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(ignore), "\n") {
		if line = strings.TrimSpace(line); line == "deploy" || line == "deploy/" || line == "*.toml" || line == "**/*.toml" {
			t.Errorf(".dockerignore %q keeps deploy/sidecar.toml out of the build", line)
		}
	}
}

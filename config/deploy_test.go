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

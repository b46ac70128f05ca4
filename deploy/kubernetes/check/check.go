// Package check decodes the Kubernetes manifests under deploy/ strictly into
// the real API types, so that a misspelt or misplaced field (which kubectl
// apply may drop with only a warning) fails CI. It is its own module, so
// that the proxy's module gains no Kubernetes dependency.
//
//	objs, err := check.Decode(data) // every YAML document of one file
package check

import (
	"bytes"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// kinds maps apiVersion and kind to a new object of the real type. A kind
// missing here is an error: add it when a manifest needs it.
var kinds = map[[2]string]func() any{
	{"apps/v1", "Deployment"}:            func() any { return &appsv1.Deployment{} },
	{"v1", "Service"}:                    func() any { return &corev1.Service{} },
	{"v1", "ConfigMap"}:                  func() any { return &corev1.ConfigMap{} },
	{"policy/v1", "PodDisruptionBudget"}: func() any { return &policyv1.PodDisruptionBudget{} },
}

// Decode splits data into YAML documents and decodes each strictly into
// its kind's type: unknown or duplicate fields are errors. Empty documents
// are skipped.
func Decode(data []byte) ([]any, error) {
	var objs []any
	for i, doc := range documents(data) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}
		newObj, ok := kinds[[2]string{meta.APIVersion, meta.Kind}]
		if !ok {
			return nil, fmt.Errorf("document %d: apiVersion %q kind %q: not a kind this check knows", i+1, meta.APIVersion, meta.Kind)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i+1, meta.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// documents splits a YAML stream at its "---" lines, dropping documents
// that hold only comments and blank lines.
func documents(data []byte) [][]byte {
	var docs [][]byte
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		if hasContent(doc) {
			docs = append(docs, doc)
		}
	}
	return docs
}

func hasContent(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' && !bytes.Equal(line, []byte("---")) {
			return true
		}
	}
	return false
}

package pool

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// A pool's lines carry each key once, with the fields the proxy gives its
// logger: JSON log pipelines reject or overwrite a duplicate key.
func TestPoolLogLinesHaveNoDuplicateKeys(t *testing.T) {
	var buf bytes.Buffer
	core := zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&buf), zap.DebugLevel)
	b := newBackend(t, false)
	log := zap.New(core).With(zap.String("backend", "app"), zap.String("server", b.addr))
	p := New(Config{Address: b.addr, ConnectTimeout: time.Second, MaxIdleAge: time.Minute}, new(counter).dial, log)

	c := get(t, p)
	p.Put(c)
	p.Put(c)             // logs: a Put of a connection the pool did not hand out
	p.Discard(get(t, p)) // logs the eviction at debug, and leaves nothing open
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatal("the pool logged nothing; the test needs at least one line")
	}
	for _, line := range lines {
		if dup := duplicateKey(t, line); dup != "" {
			t.Errorf("key %q twice in %s", dup, line)
		}
	}
}

// duplicateKey returns a key that appears twice at the top level of the
// JSON object line, or "".
func duplicateKey(t *testing.T, line string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", line)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		key := tok.(string)
		if seen[key] {
			return key
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
	return ""
}

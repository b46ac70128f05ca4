package pool

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/internal/logcheck"
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
		if dup, err := logcheck.DuplicateKey([]byte(line)); err != nil || dup != "" {
			t.Errorf("key %q twice in %s (%v)", dup, line, err)
		}
	}
}

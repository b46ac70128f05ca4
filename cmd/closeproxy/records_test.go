package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/loopback"
)

// sessions are the records of sessions that carried bytes: startDaemon's
// probe connection, reset at once, has a record too.
func sessions(lines []logLine) []logLine {
	var out []logLine
	for _, l := range records(lines) {
		if n, _ := l["front.bytes_in"].(float64); n > 0 {
			out = append(out, l)
		}
	}
	return out
}

// log.level = "warn" filters the log, never the records: they used to be
// info lines of the log, all dropped.
func TestRecordsPassAnyLogLevel(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	d := startDaemon(t, func(port uint16) string { return daemonConfig(port, backend, `level = "warn"`) })
	for i := range 3 {
		d.session(t, fmt.Sprint("hello ", i))
	}
	recs := waitLines(t, "session records on stderr", d.stderr.String, sessions, 3)
	if lvl := recs[0].str("level"); lvl != "info" {
		t.Errorf("record level %q, want info as before", lvl)
	}
	if got := withMsg(jsonLines(t, d.stderr.String()), "listening"); len(got) != 0 {
		t.Errorf("an info line passed log.level = warn: %v", got)
	}
	if d.stdout.String() != "" {
		t.Errorf("stdout %q, want nothing", d.stdout.String())
	}
}

// log.records = "stdout" moves the records and only them.
func TestRecordsOnStdout(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	d := startDaemon(t, func(port uint16) string { return daemonConfig(port, backend, `records = "stdout"`) })
	d.session(t, "hello")
	waitLines(t, "session records on stdout", d.stdout.String, sessions, 1)
	waitLines(t, "listening line on stderr", d.stderr.String, func(l []logLine) []logLine { return withMsg(l, "listening") }, 1)
	if recs := records(jsonLines(t, d.stderr.String())); len(recs) != 0 {
		t.Errorf("%d records on stderr, want none", len(recs))
	}
}

// A records file renamed away (logrotate) and SIGUSR1: later records land
// in a new file at the path, earlier ones stay in the renamed one, none is
// lost.
func TestRecordsFileReopensOnUSR1(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	path := filepath.Join(t.TempDir(), "records.log")
	d := startDaemon(t, func(port uint16) string {
		return daemonConfig(port, backend, fmt.Sprintf("records = %q", path))
	})
	read := func(p string) func() string {
		return func() string { b, _ := os.ReadFile(p); return string(b) }
	}
	for i := range 3 {
		d.session(t, fmt.Sprint("before ", i))
	}
	waitLines(t, "records before the rotation", read(path), sessions, 3)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	d.usr1 <- os.Interrupt // any value: the channel is SIGUSR1's
	waitLines(t, "reopen line", d.stderr.String, func(l []logLine) []logLine { return withMsg(l, "records file reopened") }, 1)
	for i := range 3 {
		d.session(t, fmt.Sprint("after ", i))
	}
	after := waitLines(t, "records after the rotation", read(path), sessions, 3)
	before := sessions(jsonLines(t, read(path+".1")()))
	if len(before) != 3 || len(after) != 3 {
		t.Fatalf("%d records in the rotated file, %d in the new one; want 3 and 3", len(before), len(after))
	}
	ids := map[float64]bool{}
	for _, r := range append(before, after...) {
		ids[r["id"].(float64)] = true
	}
	if len(ids) != 6 {
		t.Errorf("record ids %v: want 6 distinct", ids)
	}
	if recs := records(jsonLines(t, d.stderr.String())); len(recs) != 0 {
		t.Errorf("%d records on stderr, want none", len(recs))
	}
}

// log.records_flush: records wait in the buffer, not in the file; a
// rotation writes them to the file they were meant for before it reopens
// the path, and closing (shutdown) writes the rest.
func TestBufferedRecordsReachTheirFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.log")
	lg, err := openLogs(config.Log{Level: "info", Records: path, RecordsFlush: 10 * time.Second}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			lg.close()
		}
	}()
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	for i := range 3 {
		lg.recordLog().Info("teardown", zap.Int("id", i))
	}
	if got := read(path); got != "" {
		t.Fatalf("the file holds %q before the flush interval, want nothing yet", got)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := lg.reopen(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		lg.recordLog().Info("teardown", zap.Int("id", 3+i))
	}
	lg.close()
	closed = true
	if n := strings.Count(read(path+".1"), `"msg":"teardown"`); n != 3 {
		t.Errorf("the rotated file holds %d records, want the 3 written before the rotation:\n%s", n, read(path+".1"))
	}
	if n := strings.Count(read(path), `"msg":"teardown"`); n != 2 {
		t.Errorf("the new file holds %d records, want the 2 written after it:\n%s", n, read(path))
	}
}

// At shutdown the records still waiting in the buffer come out before
// "stopped", the daemon's last line: a log reader that sees it has
// every record.
func TestShutdownWritesRecordsBeforeStopped(t *testing.T) {
	backend := loopback.Serve(t, loopback.Echo)
	d := startDaemon(t, func(port uint16) string { return daemonConfig(port, backend, `records_flush = "10s"`) })
	for i := range 3 {
		d.session(t, fmt.Sprint("hello ", i))
	}
	if recs := sessions(jsonLines(t, d.stderr.String())); len(recs) != 0 {
		t.Fatalf("%d records out before the 10s flush interval, want them held", len(recs))
	}
	d.stop()
	lines := jsonLines(t, d.stderr.String())
	if len(lines) == 0 || lines[len(lines)-1].str("msg") != "stopped" {
		t.Fatalf("the last line is not \"stopped\":\n%s", d.stderr)
	}
	if recs := sessions(lines); len(recs) != 3 {
		t.Errorf("%d session records before \"stopped\", want 3:\n%s", len(recs), d.stderr)
	}
}

// failingSink takes its first ok lines and fails every write after them,
// as a pipe whose reader went away does.
type failingSink struct {
	mu sync.Mutex
	ok int
	b  strings.Builder
}

func (f *failingSink) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ok == 0 {
		return 0, syscall.EPIPE
	}
	f.ok--
	return f.b.Write(p)
}

// tornSink takes the first cut bytes of the write numbered fail (from 0),
// then fails it, as a disk that fills midway through a write does.
type tornSink struct {
	mu        sync.Mutex
	fail, cut int
	writes    int
	b         strings.Builder
}

func (f *tornSink) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.writes-1 == f.fail {
		n, _ := f.b.Write(p[:f.cut])
		return n, syscall.EFBIG
	}
	return f.b.Write(p)
}

// A write that fails midway through a record leaves half a line in the
// sink: the next record starts on a line of its own, valid JSON, and the
// torn one counts as lost. The next record was glued to it, and lost
// uncounted.
func TestTornRecordLeavesTheNextWhole(t *testing.T) {
	sink := &tornSink{fail: 1, cut: 10}
	var logOut syncBuffer
	lg, err := openLogs(config.Log{Level: "info", Records: "stdout"}, sink, &logOut)
	if err != nil {
		t.Fatal(err)
	}
	rec := lg.recordLog()
	for i := range 3 {
		ent := zapcore.Entry{Level: zapcore.InfoLevel, Time: time.Now(), Message: "teardown"}
		if err := rec.Core().Write(ent, []zapcore.Field{zap.Int("id", i)}); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
	}
	lg.close()
	var ids []int
	for _, line := range strings.Split(strings.TrimSuffix(sink.b.String(), "\n"), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			ids = append(ids, int(m["id"].(float64)))
		}
	}
	if fmt.Sprint(ids) != "[0 2]" || lg.lostRecords() != 1 {
		t.Errorf("whole records %v and %d lost, want [0 2] and 1 (the torn one); the sink holds:\n%s", ids, lg.lostRecords(), sink.b.String())
	}
}

// A record whose write fails is counted (closeproxy_teardown_records_lost_
// total reads lostRecords) and the log says so once, as JSON: zap's own
// plain-text "write error" line came when the record logger returned the
// error, and nothing counted the records lost. Batched records count one
// by one.
func TestLostRecordsAreCountedAndLoggedOnce(t *testing.T) {
	for _, flush := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("records_flush=", flush), func(t *testing.T) {
			sink := &failingSink{ok: 1}
			var logOut syncBuffer
			lg, err := openLogs(config.Log{Level: "info", Records: "stdout", RecordsFlush: flush}, sink, &logOut)
			if err != nil {
				t.Fatal(err)
			}
			rec := lg.recordLog()
			if flush > 0 {
				sink.ok = 0 // the batch writes once: let it fail
			}
			for i := range 4 {
				ent := zapcore.Entry{Level: zapcore.InfoLevel, Time: time.Now(), Message: "teardown"}
				if err := rec.Core().Write(ent, []zapcore.Field{zap.Int("id", i)}); err != nil {
					t.Errorf("record %d: the core returned %v: zap writes a plain-text line for it", i, err)
				}
			}
			lg.flushRecords()
			want := uint64(3)
			if flush > 0 {
				want = 4
			}
			if got := lg.lostRecords(); got != want {
				t.Errorf("lost records %d, want %d", got, want)
			}
			lines := withMsg(jsonLines(t, logOut.String()), "teardown records not written")
			if len(lines) != 1 {
				t.Fatalf("%d log lines about lost records, want 1 (at most every %v):\n%s", len(lines), lostEvery, logOut.String())
			}
			if n, _ := lines[0]["records_lost_total"].(float64); n < 1 {
				t.Errorf("the log line says %v records lost, want at least 1", lines[0]["records_lost_total"])
			}
			lg.close()
			// The first line said the count as of the first loss; the
			// rest is told at the end, where the first did not say all.
			final := withMsg(jsonLines(t, logOut.String()), "teardown records not written: the final count")
			if n, _ := lines[0]["records_lost_total"].(float64); uint64(n) < want &&
				(len(final) != 1 || final[0]["records_lost_total"] != float64(want)) {
				t.Errorf("at close the log says %v, want one line with the final count %d:\n%s", final, want, logOut.String())
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/internal/logfile"
)

// logs are the process's two outputs: the log, filtered by log.level, and
// the teardown records (log.records), which no level filters.
type logs struct {
	log     *zap.Logger
	level   zap.AtomicLevel
	records *zap.Logger   // nil: records go to log
	file    *logfile.File // log.records names a file: SIGUSR1 reopens it
	// buffer holds records for up to log.records_flush, when set, to be
	// written together.
	buffer    *logfile.Batch
	abandoned atomic.Bool   // shutdown gave up on a records sink that takes nothing
	lost      atomic.Uint64 // records whose write failed
	// torn: a failed write left a line without its end in the records'
	// sink; the next write ends it first, so that no record after it is
	// glued to it.
	torn     atomic.Bool
	lostSaid atomic.Int64  // unix nanoseconds of the last log line about them
	lostTold atomic.Uint64 // the total that line gave: close tells the rest
}

// recordsBuffer caps what log.records_flush keeps waiting: a full buffer
// is written at once.
const recordsBuffer = 256 << 10

// openLogs builds both outputs of c. stdout and stderr are the process's;
// when the records share one with the log, they share its lock too, so
// lines never interleave.
func openLogs(c config.Log, stdout, stderr io.Writer) (*logs, error) {
	level, err := zap.ParseAtomicLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	logOut := zapcore.Lock(zapcore.AddSync(stderr))
	l := &logs{log: newLogger(level, logOut), level: level}
	var recOut zapcore.WriteSyncer
	switch c.Records {
	case "", "stderr":
		recOut = logOut
	case "stdout":
		recOut = zapcore.Lock(zapcore.AddSync(stdout))
	default:
		if l.file, err = logfile.Open(c.Records); err != nil {
			return nil, fmt.Errorf("log.records: %w", err)
		}
		recOut = l.file
	}
	recOut = lostCounter{out: recOut, l: l}
	if c.RecordsFlush > 0 {
		l.buffer = logfile.NewBatch(recOut, c.RecordsFlush, recordsBuffer, nil) // lostCounter tells of failures
		recOut = l.buffer
	}
	l.records = newRecordLogger(recOut)
	return l, nil
}

// lostCounter is the records' sink as the record logger sees it: a
// write that fails (a full disk, a closed pipe) counts the records it
// lost, says so in the log at most every lostEvery, and reports success,
// so that zap does not write its own plain-text error line among the
// JSON ones.
type lostCounter struct {
	out zapcore.WriteSyncer
	l   *logs
}

// lostEvery spaces the log lines about lost records.
const lostEvery = 10 * time.Second

func (c lostCounter) Write(p []byte) (int, error) {
	if c.l.torn.Load() {
		if _, err := c.out.Write(newline); err != nil {
			return c.failed(p, 0, err)
		}
		c.l.torn.Store(false)
	}
	n, err := c.out.Write(p)
	if err == nil {
		return n, nil
	}
	return c.failed(p, n, err)
}

var newline = []byte{'\n'}

// failed counts the records of p that a write which took its first n
// bytes lost, and notes a line it tore.
func (c lostCounter) failed(p []byte, n int, err error) (int, error) {
	if n > 0 && p[n-1] != '\n' {
		c.l.torn.Store(true)
	}
	lost := uint64(bytes.Count(p[n:], newline))
	if lost == 0 {
		lost = 1 // a line without its end is lost all the same
	}
	total := c.l.lost.Add(lost)
	now := time.Now().UnixNano()
	if last := c.l.lostSaid.Load(); (last == 0 || now-last >= int64(lostEvery)) && c.l.lostSaid.CompareAndSwap(last, now) {
		c.l.lostTold.Store(total)
		c.l.log.Error("teardown records not written", zap.Error(err), zap.Uint64("records_lost_total", total))
	}
	return len(p), nil
}

func (c lostCounter) Sync() error { return c.out.Sync() }

// lostRecords is how many records were lost to failed writes so far.
func (l *logs) lostRecords() uint64 { return l.lost.Load() }

// recordLog returns the logger teardown records go to.
func (l *logs) recordLog() *zap.Logger {
	if l.records != nil {
		return l.records
	}
	return l.log
}

// reopen opens the records file anew (after logrotate moved it), once
// the records that wait in the buffer went to the old one; nothing to do
// when records go to stdout or stderr.
func (l *logs) reopen() error {
	if l.file == nil {
		return nil
	}
	l.flushRecords() // reopen all the same if the write fails
	if err := l.file.Reopen(); err != nil {
		return err
	}
	l.torn.Store(false) // a new file holds no torn line
	return nil
}

// flushRecords writes out the records that wait in the buffer, if any.
func (l *logs) flushRecords() {
	if l.buffer != nil {
		_ = l.buffer.Flush() // a write that fails fails as a record's own would
	}
}

// abandon gives up on what waits for a records sink that takes nothing:
// close then closes without writing it.
func (l *logs) abandon() { l.abandoned.Store(true) }

// close flushes both outputs, the buffered records included, and closes
// the records file.
func (l *logs) close() {
	if l.abandoned.Load() {
		return // a write blocked on the sink holds the file: the process's exit closes it
	}
	if l.buffer != nil {
		_ = l.buffer.Stop()
	}
	if l.records != nil {
		_ = l.records.Sync()
	}
	if n := l.lost.Load(); n > l.lostTold.Load() { // lost since the last line said, or at the end
		l.log.Error("teardown records not written: the final count", zap.Uint64("records_lost_total", n))
	}
	_ = l.log.Sync()
	if l.file != nil {
		_ = l.file.Close()
	}
}

// reopenOnUSR1 reopens the records file on each SIGUSR1 until ctx ends.
func reopenOnUSR1(ctx context.Context, usr1 <-chan os.Signal, l *logs) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-usr1:
		}
		if err := l.reopen(); err != nil {
			l.log.Error("records file not reopened; records go on to the old one", zap.Error(err))
			continue
		}
		if l.file != nil {
			l.log.Info("records file reopened", zap.String("path", l.file.Path()))
		}
	}
}

// newLogger writes JSON lines to w at lvl and above; teardown records are
// lines with msg "teardown".
func newLogger(lvl zapcore.LevelEnabler, w zapcore.WriteSyncer) *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(encoderConfig()), w, lvl))
}

// newRecordLogger writes every record to w, as newLogger's lines, through
// recordCore.
func newRecordLogger(w zapcore.WriteSyncer) *zap.Logger {
	return zap.New(recordCore{next: newLogger(zapcore.DebugLevel, w).Core(), out: w})
}

func encoderConfig() zapcore.EncoderConfig {
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	return enc
}

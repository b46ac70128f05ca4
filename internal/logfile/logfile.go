// Package logfile is a file that log lines are appended to and that can be
// reopened at its path after something moved it away: logrotate renames
// the file, then signals the process (postrotate kill -USR1), which calls
// Reopen. Lines written before Reopen land in the renamed file, lines
// written after in the new one; none is lost or split.
//
// Batch, in front of a File (or stdout, stderr), holds lines for a short
// while to write them together: one write for many teardown records.
package logfile

import (
	"fmt"
	"os"
	"sync"
)

// File appends to the file at a path. Its methods are safe for concurrent
// use; each Write reaches the file whole.
type File struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// Open opens path for appending, creating it (mode 0644) if needed.
func Open(path string) (*File, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	return &File{path: path, f: f}, nil
}

func open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log file: %w", err)
	}
	return f, nil
}

// Path returns the path the file is (re)opened at.
func (l *File) Path() string { return l.path }

// Write appends p.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Sync flushes the file to disk.
func (l *File) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Sync()
}

// Reopen opens the path anew and closes the file it replaces. If the path
// cannot be opened, writes go on to the old file and the error says why.
func (l *File) Reopen() error {
	f, err := open(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if err := old.Close(); err != nil {
		return fmt.Errorf("close rotated log file %s: %w", l.path, err)
	}
	return nil
}

// Close closes the file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

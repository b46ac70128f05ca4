package http1

import "bytes"

// ChunkScanner finds where a chunked body ends in bytes fed to it as
// they arrive, checking them as CopyBody checks them (the same refusals,
// wrapping ErrBadResponse, or ErrBadRequest for a request's body): for
// an event loop, which relays each read as it comes and cannot wait on a
// reader.
type ChunkScanner struct {
	Request bool // a request's body: refusals wrap ErrBadRequest
	state   scanState
	line    []byte // the line being read (a chunk-size or trailer line)
	left    int64  // chunk data bytes still to come
	budget  int    // what the trailer section may still take
}

type scanState int

const (
	scanSize    scanState = iota // a chunk-size line
	scanData                     // chunk data
	scanCR                       // the CR after chunk data
	scanLF                       // the LF after it
	scanTrailer                  // a trailer line, or the final empty line
	scanDone
)

// Scan takes p, the next bytes after those it took before, and returns
// how many of them belong to the body: all of p, or fewer when the body
// ended within it (done). Once done, it takes nothing more. On a refusal
// n stops before the refused line's bytes within p (those of it in an
// earlier p were counted then): what it counts may go on, the line not.
func (s *ChunkScanner) Scan(p []byte) (n int, done bool, err error) {
	for n < len(p) {
		switch s.state {
		case scanSize, scanTrailer:
			max := maxChunkLine
			if s.state == scanTrailer {
				max = s.budget
			}
			i := bytes.IndexByte(p[n:], '\n')
			end := len(p)
			if i >= 0 {
				end = n + i + 1
			}
			start := n
			s.line = append(s.line, p[n:end]...)
			n = end
			if len(s.line) >= max {
				return start, false, refuse(s.kind(), "chunked line too long")
			}
			if i < 0 {
				continue
			}
			if err := s.endLine(); err != nil {
				return start, false, err
			}
			if s.state == scanDone {
				return n, true, nil
			}
		case scanData:
			k := int(min(s.left, int64(len(p)-n)))
			n += k
			if s.left -= int64(k); s.left == 0 {
				s.state = scanCR
			}
		case scanCR, scanLF:
			want := byte('\r')
			if s.state == scanLF {
				want = '\n'
			}
			if p[n] != want {
				return n, false, refuse(s.kind(), "no CRLF after chunk data")
			}
			n++
			if s.state++; s.state > scanLF {
				s.state = scanSize
			}
		default:
			return n, true, nil
		}
	}
	return n, s.state == scanDone, nil
}

// kind is what the scanner's refusals wrap.
func (s *ChunkScanner) kind() error {
	if s.Request {
		return ErrBadRequest
	}
	return ErrBadResponse
}

// Done says the body ended.
func (s *ChunkScanner) Done() bool { return s.state == scanDone }

// endLine checks a whole line, as chunkCopier.line and run do, and moves on.
func (s *ChunkScanner) endLine() error {
	line := s.line
	s.line = s.line[:0]
	switch cr := bytes.IndexByte(line, '\r'); {
	case cr < 0:
		return refuse(s.kind(), "bare LF in chunked body")
	case cr != len(line)-2:
		return refuse(s.kind(), "bare CR in chunked body")
	}
	if s.state == scanTrailer {
		s.budget -= len(line)
		if len(line) == 2 {
			s.state = scanDone
			return nil
		}
		if _, reason := parseField(string(line[:len(line)-2])); reason != "" {
			return refuse(s.kind(), "trailer: "+reason)
		}
		return nil
	}
	size, reason := parseChunkLine(line[:len(line)-2])
	switch {
	case reason != "":
		return refuse(s.kind(), reason)
	case size == 0:
		s.state, s.budget = scanTrailer, maxTrailerBytes
	default:
		s.state, s.left = scanData, size
	}
	return nil
}

package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/closeproxy/closeproxy/internal/loopback"
)

// TestCloseChaos is a randomized exploration of the close path: batches of
// sessions, each batch in a fresh topology (three namespaces) with one
// closeproxy (relay picked at random) and several listeners, each with a
// random pair of targets, fallbacks, grace and mode (tcp or http1), in
// front of a scripted backend. Each session picks a client and a server
// behaviour and random sizes and pauses. Checked per session: every byte
// each side wrote and the other should have got arrived (compared
// byte-for-byte, SHA-256 logged), a clean EOF is never seen after a cut,
// records say ok only when nothing was lost and name the peer's abort;
// per listener: every record's TIME-WAIT claims against the kernel by
// 4-tuple (requireAgreement, as the close matrix does).
//
// CLOSEPROXY_CHAOS_SEED picks the run (default: the time), and is printed
// on failure; CLOSEPROXY_CHAOS_SESSIONS (default 120),
// CLOSEPROXY_CHAOS_BATCH (sessions per topology, default 30) and
// CLOSEPROXY_CHAOS_BUDGET (default 6m) bound it. CLOSEPROXY_CHAOS_KNOWN=log
// logs the kinds of finding its first runs reported (LOST/UNREAD BEFORE RESET, RESPONSE
// END) and the back leg's grace bet lost (graceBetLost) instead of failing, and stops generating aborts after a half-close,
// so that a run shows what is new. CLOSEPROXY_CHAOS_REPRO=<name> runs n
// copies of one fixed session instead (chaosRepro). CLOSEPROXY_TEST_RELAY
// forces the relay as for the other integration tests.
func TestCloseChaos(t *testing.T) {
	if os.Getenv("CLOSEPROXY_CHAOS") == "" && os.Getenv("CLOSEPROXY_CHAOS_SEED") == "" && os.Getenv("CLOSEPROXY_CHAOS_REPRO") == "" {
		t.Skip("a randomized exploration, minutes long: CLOSEPROXY_CHAOS=1 runs it (docs/development.md)")
	}
	needRoot(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CLOSEPROXY_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CLOSEPROXY_CHAOS_SEED %q: %v", s, err)
		}
		seed = v
	}
	sessions := chaosEnvInt("CLOSEPROXY_CHAOS_SESSIONS", 120)
	perBatch := chaosEnvInt("CLOSEPROXY_CHAOS_BATCH", 30)
	budget := 6 * time.Minute
	if s := os.Getenv("CLOSEPROXY_CHAOS_BUDGET"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CLOSEPROXY_CHAOS_BUDGET %q: %v", s, err)
		}
		budget = d
	}
	t.Logf("CLOSEPROXY_CHAOS_SEED=%d sessions=%d batch=%d budget=%v relay env %q", seed, sessions, perBatch, budget, testRelay)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED: rerun with CLOSEPROXY_CHAOS_SEED=%d CLOSEPROXY_CHAOS_SESSIONS=%d CLOSEPROXY_CHAOS_BATCH=%d", seed, sessions, perBatch)
		}
	})
	start := time.Now()
	done := 0
	for b := 0; done < sessions && b < 1000; b++ {
		if time.Since(start) > budget {
			t.Logf("time budget %v spent after %d sessions", budget, done)
			break
		}
		n := min(perBatch, sessions-done)
		rng := rand.New(rand.NewPCG(seed, uint64(b)))
		plan := newChaosBatch(rng, b, n)
		if r := os.Getenv("CLOSEPROXY_CHAOS_REPRO"); r != "" {
			plan = chaosRepro(t, r, b, n)
		}
		t.Run(fmt.Sprintf("batch%d", b), func(t *testing.T) {
			t.Logf("batch %d: relay %s\n%s", b, plan.relay, plan.describe())
			runChaosBatch(t, plan)
		})
		done += n
	}
	t.Logf("chaos: %d sessions in %v (seed %d)", done, time.Since(start).Round(time.Second), seed)
}

// graceBetLost says whether p is what the back leg's grace bet costs when
// it loses, a gap docs/guarantees.md names: the proxy took a client's
// FIN that acknowledged the answer so far for the end of the exchange
// (it may have crossed the answer), the backend paused past the grace
// and the proxy reset the back leg (reason grace_expired), so the
// backend's next bytes were refused and the client saw a clean end (or,
// where the front leg ends by a reset too, a reset). Seen with a client
// that half-closes right behind its upload on a busy host (seeds 5, 89
// and 179). What the backend wrote before its refused write must all
// have reached the client: the bet's loss is the backend's bytes after
// it, and anything else lost is no part of it.
func graceBetLost(r Record, p string, cl, be chaosSaw, beOK bool) bool {
	if r.Str("back.reason") != "grace_expired" || r.Str("back.close") != "reset" {
		return false
	}
	if strings.HasPrefix(p, "DISGUISED CUT: the client read a clean EOF") ||
		strings.HasPrefix(p, "backend closed with the upload in flight") {
		return true
	}
	refused := beOK && be.writeEnd == "reset" && int64(len(cl.got)) == be.wrote
	return refused && (strings.HasPrefix(p, "DATA LOST: the client read") || strings.HasPrefix(p, "the backend's answer failed"))
}

// knownCrossings returns recs with the claims of a gap docs/guarantees.md
// names taken as what the kernel holds, each logged as a known finding: a
// leg whose record says the proxy's FIN went first and TIME-WAIT is the
// proxy's, where the kernel holds TIME-WAIT on both ends. The peer's FIN
// waited behind its own bytes (FIN-WAIT-1) when the proxy's arrived; its
// kernel acknowledged the proxy's at once, so the proxy saw its FIN
// acknowledged before the peer's, as from a peer that closed in answer
// (seeds 47 and 127). The records themselves are left as they are.
func knownCrossings(t *testing.T, recs []Record, held map[tuple]bool) []Record {
	out, copied := recs, false
	for i, r := range recs {
		for _, leg := range []string{"front", "back"} {
			l, p := r.Str(leg+".local"), r.Str(leg+".peer")
			if r.Str(leg+".time_wait") != "proxy" || r.Str(leg+".first_fin") != "proxy" || !held[tuple{l, p}] || !held[tuple{p, l}] {
				continue
			}
			t.Logf("KNOWN FINDING record %v: %s.time_wait \"proxy\", the kernel holds TIME-WAIT on both ends of %s ↔ %s (a peer's FIN queued behind its bytes crossed the proxy's)\n  %s", r["id"], leg, l, p, legs(r))
			if !copied {
				out, copied = slices.Clone(recs), true
			}
			c := maps.Clone(out[i])
			c[leg+".time_wait"] = "both"
			out[i] = c
		}
	}
	return out
}

func chaosEnvInt(key string, def int) int {
	if s := os.Getenv(key); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			return v
		}
	}
	return def
}

// chaosUp and chaosDown are the bytes clients upload and backends send.
var (
	chaosUp   = blob(2<<20 + 3)
	chaosDown = blob(4<<20 + 5)
)

const chaosPreamble = 16 // "CHAOS%010d\n"

type chaosListener struct {
	name          string
	port, webPort uint16
	mode          string // tcp | http1
	front, back   string
	ffb, bfb      string // fallbacks ("" default)
	grace         string
	adaptive      string
	idle          string // "" or a short idle_timeout
}

func (l chaosListener) String() string {
	return fmt.Sprintf("%s mode=%s front=%s(fallback=%q) back=%s(fallback=%q) grace=%s adaptive=%q idle=%q",
		l.name, l.mode, l.front, l.ffb, l.back, l.bfb, l.grace, l.adaptive, l.idle)
}

// chaosSession is one connection's plan.
type chaosSession struct {
	id                   int
	l                    *chaosListener
	client               string // behaviour
	server               string
	up                   int // upload payload bytes (tcp: after the preamble; http1: body)
	up1                  int // tcp late_send / answer_halfclose: bytes before the answer
	down                 int // download bytes (tcp stream, http1 body)
	k                    int // abort point (client) or part sent/read before a reset (server)
	r                    int // server: payload bytes read before reset/fin_early
	pause                time.Duration
	delay                time.Duration // start
	upCuts, downCuts     []int
	upPauses, downPauses []time.Duration
	halfFirst            bool // abort_resp: half-close before reading
	waitEOF              bool // late_send: wait for EOF before sending more
	rst                  bool // http1 abort_req: RST (else FIN)
}

func (s *chaosSession) String() string {
	return fmt.Sprintf("session %d on %s: client=%s server=%s up=%d up1=%d down=%d k=%d r=%d pause=%v upPieces=%v/%v downPieces=%v/%v halfFirst=%v waitEOF=%v rst=%v",
		s.id, s.l.name, s.client, s.server, s.up, s.up1, s.down, s.k, s.r, s.pause, s.upCuts, s.upPauses, s.downCuts, s.downPauses, s.halfFirst, s.waitEOF, s.rst)
}

type chaosBatch struct {
	relay     string
	listeners []*chaosListener
	sessions  []*chaosSession
}

func (b *chaosBatch) describe() string {
	var s strings.Builder
	for _, l := range b.listeners {
		fmt.Fprintf(&s, "  %s\n", l)
	}
	for _, x := range b.sessions {
		fmt.Fprintf(&s, "  %s\n", x)
	}
	return s.String()
}

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// chaosSize is a size in [lo, hi], log-spread, with 0 now and then.
func chaosSize(rng *rand.Rand, lo, hi int) int {
	switch rng.IntN(10) {
	case 0:
		return lo
	case 1, 2, 3:
		return lo + rng.IntN(min(hi-lo+1, 2000))
	case 4, 5, 6:
		return lo + rng.IntN(min(hi-lo+1, 300<<10))
	}
	return lo + rng.IntN(hi-lo+1)
}

func chaosPieces(rng *rand.Rand, size int, grace time.Duration) ([]int, []time.Duration) {
	n := 1 + rng.IntN(4)
	var cuts []int
	var pauses []time.Duration
	for i := 1; i < n && size > 0; i++ {
		cuts = append(cuts, rng.IntN(size+1))
		pauses = append(pauses, pick(rng, 0, 2*time.Millisecond, 30*time.Millisecond, 200*time.Millisecond, grace+300*time.Millisecond))
	}
	// sorted cuts
	for i := range cuts {
		for j := i + 1; j < len(cuts); j++ {
			if cuts[j] < cuts[i] {
				cuts[i], cuts[j] = cuts[j], cuts[i]
			}
		}
	}
	return cuts, pauses
}

func newChaosBatch(rng *rand.Rand, b, n int) *chaosBatch {
	batch := &chaosBatch{relay: pick(rng, "loop", "goroutines")}
	if testRelay != "" {
		batch.relay = testRelay
	}
	nl := 4
	for i := range nl {
		l := &chaosListener{
			name: fmt.Sprintf("chaos%d", i), port: uint16(8100 + i), webPort: uint16(9100 + i),
			mode:  pick(rng, "tcp", "tcp", "tcp", "http1"),
			front: pick(rng, "proxy", "client", "nowhere", "auto"),
			back:  pick(rng, "proxy", "backend", "nowhere", "auto"),
			ffb:   pick(rng, "", "fin", "reset"), bfb: pick(rng, "", "fin", "reset"),
			grace:    pick(rng, "300ms", "1s"),
			adaptive: pick(rng, "", "", "false"),
			idle:     pick(rng, "", "", "3s"),
		}
		batch.listeners = append(batch.listeners, l)
	}
	for i := range n {
		l := batch.listeners[rng.IntN(nl)]
		s := &chaosSession{id: b*1000 + i, l: l, delay: time.Duration(rng.IntN(400)) * time.Millisecond}
		grace, _ := time.ParseDuration(l.grace)
		if l.mode == "tcp" {
			chaosTCPPlan(rng, s, grace)
		} else {
			chaosHTTPPlan(rng, s, grace)
		}
		batch.sessions = append(batch.sessions, s)
	}
	return batch
}

func chaosTCPPlan(rng *rand.Rand, s *chaosSession, grace time.Duration) {
	servers := []string{"wait_eof", "answer_fin", "answer_halfclose", "answer_halfclose", "reset", "fin_early", "echo"}
	if s.l.idle != "" {
		servers = append(servers, "stall")
	}
	s.server = pick(rng, servers...)
	s.up = chaosSize(rng, 0, 2<<20)
	s.down = chaosSize(rng, 0, 4<<20)
	var clients []string
	switch s.server {
	case "wait_eof":
		clients = []string{"halfclose", "halfclose", "slowread", "abort_req", "abort_resp"}
	case "answer_fin":
		clients = []string{"halfclose", "readclose", "slowread", "abort_req", "abort_resp"}
	case "answer_halfclose":
		clients = []string{"halfclose", "readclose", "slowread", "late_send", "late_send", "abort_req", "abort_resp"}
	case "echo":
		clients = []string{"echo"}
	default:
		clients = []string{"halfclose", "readclose"}
	}
	s.client = pick(rng, clients...)
	switch s.client {
	case "abort_req":
		s.up = max(s.up, 1)
		s.k = rng.IntN(s.up)
	case "abort_resp":
		s.down = max(s.down, 1)
		s.k = rng.IntN(s.down)
		s.halfFirst = s.server == "wait_eof" || rng.IntN(2) == 0
		if os.Getenv("CLOSEPROXY_CHAOS_KNOWN") == "log" && s.halfFirst {
			// an abort after a half-close races the proxy's FIN or safe
			// reset (findings already made): look elsewhere
			s.client, s.halfFirst, s.k = "halfclose", false, 0
		}
	case "late_send":
		s.up = max(s.up, 1)
		s.up1 = rng.IntN(s.up)
		s.waitEOF = rng.IntN(2) == 0
		s.pause = pick(rng, 0, 20*time.Millisecond, 300*time.Millisecond, grace+500*time.Millisecond)
	case "halfclose":
		s.pause = pick(rng, 0, 0, 100*time.Millisecond, grace+200*time.Millisecond, 2*time.Second)
		if s.l.idle != "" {
			s.pause = min(s.pause, 1500*time.Millisecond) // a pause past idle_timeout is a legitimate cut
		}
	}
	if s.client != "late_send" {
		s.up1 = s.up
	}
	switch s.server {
	case "reset", "stall":
		s.down = max(s.down, 1)
		s.k = rng.IntN(s.down)
		s.r = rng.IntN(s.up + 1)
		if s.server == "stall" {
			s.r = s.up
		}
	case "fin_early":
		s.up = max(s.up, 1)
		s.up1 = s.up
		s.r = rng.IntN(s.up)
	}
	if s.server == "echo" {
		s.down, s.up1 = s.up, s.up
	}
	s.upCuts, s.upPauses = chaosPieces(rng, s.up, grace)
	s.downCuts, s.downPauses = chaosPieces(rng, s.down, grace)
}

func chaosHTTPPlan(rng *rand.Rand, s *chaosSession, grace time.Duration) {
	servers := []string{"cl", "cl", "chunked", "closedelim", "reset_cl", "reset_closedelim"}
	if s.l.idle != "" {
		servers = append(servers, "noanswer")
	}
	s.server = pick(rng, servers...)
	s.up = chaosSize(rng, 0, 1<<20)
	s.down = chaosSize(rng, 0, 4<<20)
	clients := []string{"normal", "halfclose", "pause", "closeinstant", "connclose", "two", "abort_req", "abort_resp"}
	if strings.HasPrefix(s.server, "reset") || s.server == "noanswer" {
		clients = []string{"normal", "halfclose", "connclose"}
	}
	s.client = pick(rng, clients...)
	if s.client == "two" && s.server == "closedelim" {
		s.client = "normal" // a close-delimited answer ends the connection
	}
	switch s.client {
	case "abort_req":
		s.up = max(s.up, 2)
		s.k = rng.IntN(s.up)
		s.rst = rng.IntN(2) == 0
	case "abort_resp":
		s.down = max(s.down, 1)
		s.k = rng.IntN(s.down)
	case "pause":
		s.pause = pick(rng, grace+200*time.Millisecond, 2*time.Second)
		if s.l.idle != "" {
			s.pause = min(s.pause, 1500*time.Millisecond) // a pause past idle_timeout is a legitimate cut
		}
	}
	if strings.HasPrefix(s.server, "reset") {
		s.down = max(s.down, 1)
		s.k = rng.IntN(s.down)
	}
	s.upCuts, s.upPauses = chaosPieces(rng, s.up, grace)
	s.downCuts, s.downPauses = chaosPieces(rng, s.down, grace)
}

// chaosSaw is what one end saw.
type chaosSaw struct {
	got      []byte
	end      string // how reading ended
	wrote    int64
	writeEnd string
	fin      bool // ended its sending side with a FIN after wrote bytes
	rst      bool // closed with SO_LINGER 0
	status   int
	local    string
	drained  bool // backend reset only after its send queue drained
	bodyEnd  string
	at       time.Time
}

// markEOF: a read that returned EOF after a write of the same socket
// failed with a reset is not a clean end (the reset's error went to the
// write; a read then says 0).
func (s *chaosSaw) markEOF() {
	if s.end == "eof" && s.writeEnd != "" {
		s.end = "eof-after-write-" + s.writeEnd
	}
}

// writePieces writes b in pieces cut at cuts (offsets into b's payload part
// past skip), pausing between them.
func (s *chaosSaw) writePieces(c *net.TCPConn, b []byte, skip int, cuts []int, pauses []time.Duration) error {
	prev := 0
	for i := 0; i <= len(cuts); i++ {
		end := len(b)
		if i < len(cuts) {
			end = min(skip+cuts[i], len(b))
		}
		if end > prev {
			k, err := c.Write(b[prev:end])
			s.wrote += int64(k)
			if err != nil {
				s.writeEnd = endKind(err)
				return err
			}
			prev = end
		}
		if i < len(cuts) && pauses[i] > 0 {
			time.Sleep(pauses[i]) // the peer's pause under test
		}
	}
	return nil
}

// readUpTo reads into s.got until it holds n bytes (n < 0: to the end).
func (s *chaosSaw) readUpTo(r io.Reader, n int) error {
	buf := make([]byte, 32<<10)
	for n < 0 || len(s.got) < n {
		want := len(buf)
		if n >= 0 {
			want = min(want, n-len(s.got))
		}
		k, err := r.Read(buf[:want])
		s.got = append(s.got, buf[:k]...)
		if err != nil {
			s.end = endKind(err)
			return err
		}
	}
	return nil
}

func (s *chaosSession) upload() []byte {
	b := make([]byte, 0, chaosPreamble+s.up)
	b = append(b, fmt.Sprintf("CHAOS%010d\n", s.id)...)
	return append(b, chaosUp[:s.up]...)
}

func (s *chaosSession) runTCPClient(c *net.TCPConn) chaosSaw {
	var cs chaosSaw
	up := s.upload()
	switch s.client {
	case "halfclose":
		if cs.writePieces(c, up, chaosPreamble, s.upCuts, s.upPauses) == nil {
			if err := c.CloseWrite(); err != nil {
				cs.writeEnd = endKind(err)
			} else {
				cs.fin = true
			}
		}
		time.Sleep(s.pause) // the paused reader under test
		cs.readUpTo(c, -1)
	case "slowread":
		// half-closes after sending, then reads in small bites with short
		// sleeps: a reader slower than the backend, never quite paused.
		if cs.writePieces(c, up, chaosPreamble, s.upCuts, s.upPauses) == nil {
			if err := c.CloseWrite(); err != nil {
				cs.writeEnd = endKind(err)
			} else {
				cs.fin = true
			}
		}
		buf := make([]byte, 2048+s.id%4096)
		for i := 0; i < 20000; i++ {
			k, err := c.Read(buf)
			cs.got = append(cs.got, buf[:k]...)
			if err != nil {
				cs.end = endKind(err)
				break
			}
			if i%8 == 0 {
				time.Sleep(time.Millisecond) // the slow reader under test
			}
		}
	case "echo":
		// writes while it reads the echo, half-closes, reads to the end
		done := make(chan struct{})
		var w chaosSaw
		go func() {
			defer close(done)
			if w.writePieces(c, up, chaosPreamble, s.upCuts, s.upPauses) == nil {
				if err := c.CloseWrite(); err != nil {
					w.writeEnd = endKind(err)
				} else {
					w.fin = true
				}
			}
		}()
		cs.readUpTo(c, -1)
		<-done
		cs.wrote, cs.writeEnd, cs.fin = w.wrote, w.writeEnd, w.fin
	case "readclose":
		cs.writePieces(c, up, chaosPreamble, s.upCuts, s.upPauses)
		if cs.readUpTo(c, s.down) == nil {
			cs.end = "closed"
		}
		cs.fin = cs.writeEnd == ""
	case "late_send":
		first := up[:chaosPreamble+s.up1]
		var cuts1 []int
		for _, x := range s.upCuts {
			cuts1 = append(cuts1, min(x, s.up1))
		}
		if cs.writePieces(c, first, chaosPreamble, cuts1, s.upPauses) != nil {
			break
		}
		if s.waitEOF {
			cs.readUpTo(c, -1)
		} else if cs.readUpTo(c, s.down) != nil {
			break
		}
		time.Sleep(s.pause) // sends more after the backend's half-close
		k, err := c.Write(up[chaosPreamble+s.up1:])
		cs.wrote += int64(k)
		if err != nil {
			cs.writeEnd = endKind(err)
			break
		}
		if err := c.CloseWrite(); err != nil {
			cs.writeEnd = endKind(err)
		} else {
			cs.fin = true
		}
		if !s.waitEOF {
			cs.readUpTo(c, -1)
		}
	case "abort_req":
		k, err := c.Write(up[:chaosPreamble+s.k])
		cs.wrote += int64(k)
		if err != nil {
			cs.writeEnd = endKind(err)
		}
		time.Sleep(time.Duration(20+s.id%60) * time.Millisecond) // let the bytes reach the backend
		cs.rst, cs.end = true, "closed"
		_ = c.SetLinger(0)
	case "abort_resp":
		if cs.writePieces(c, up, chaosPreamble, s.upCuts, s.upPauses) == nil && s.halfFirst {
			if err := c.CloseWrite(); err == nil {
				cs.fin = true
			}
		}
		if cs.readUpTo(c, s.k) == nil {
			cs.end = "closed"
		}
		cs.rst = true
		_ = c.SetLinger(0)
	}
	return cs
}

// chaosBackendLog is what the backends saw, by session id.
type chaosBackendLog struct {
	saws awaitMap[int, chaosSaw]
	mu   sync.Mutex // for stray
	// unattributed connections (no preamble / request) and how they ended
	stray []string
}

func (l *chaosBackendLog) put(id int, s chaosSaw) {
	s.at = time.Now()
	l.saws.put(id, s)
}

func (l *chaosBackendLog) get(id int, timeout time.Duration) (chaosSaw, bool) {
	return l.saws.find(id, timeout)
}

const chaosStall = 6 * time.Second // longer than 1.25 × the short idle_timeout

func chaosTCPBackend(plans map[int]*chaosSession, log *chaosBackendLog) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(40 * time.Second))
		var bs chaosSaw
		pre := make([]byte, chaosPreamble)
		if _, err := io.ReadFull(c, pre); err != nil {
			log.mu.Lock()
			log.stray = append(log.stray, c.RemoteAddr().String()+": "+endKind(err))
			log.mu.Unlock()
			return
		}
		bs.got = append(bs.got, pre...)
		id, err := strconv.Atoi(strings.TrimSpace(string(pre[5:])))
		p := plans[id]
		if err != nil || p == nil {
			log.mu.Lock()
			log.stray = append(log.stray, fmt.Sprintf("%s: bad preamble %q", c.RemoteAddr(), pre))
			log.mu.Unlock()
			return
		}
		defer func() { bs.markEOF(); log.put(id, bs) }()
		down := chaosDown[:p.down]
		switch p.server {
		case "wait_eof":
			bs.readUpTo(c, -1)
			if bs.end == "eof" && bs.writePieces(c, down, 0, p.downCuts, p.downPauses) == nil {
				bs.fin = true
			}
		case "answer_fin":
			if bs.readUpTo(c, chaosPreamble+p.up) == nil && bs.writePieces(c, down, 0, p.downCuts, p.downPauses) == nil {
				bs.fin = true
			}
		case "answer_halfclose":
			if bs.readUpTo(c, chaosPreamble+p.up1) == nil && bs.writePieces(c, down, 0, p.downCuts, p.downPauses) == nil {
				if err := c.CloseWrite(); err == nil {
					bs.fin = true
				}
				bs.readUpTo(c, -1)
			}
		case "reset":
			if bs.readUpTo(c, chaosPreamble+p.r) == nil {
				cuts, pauses := cutsIn(p.downCuts, p.downPauses, p.k)
				bs.writePieces(c, down[:p.k], 0, cuts, pauses)
				bs.drained = loopback.Acked(c, 2*time.Second)
			}
			bs.rst = true
			_ = c.SetLinger(0)
		case "stall":
			if bs.readUpTo(c, chaosPreamble+p.up) == nil {
				cuts, pauses := cutsIn(p.downCuts, p.downPauses, p.k)
				bs.writePieces(c, down[:p.k], 0, cuts, pauses)
				time.Sleep(chaosStall) // the stalled backend under test
				bs.readUpTo(c, -1)
			}
		case "echo":
			buf := make([]byte, 16<<10)
			for {
				k, err := c.Read(buf)
				bs.got = append(bs.got, buf[:k]...)
				if k > 0 {
					w, werr := c.Write(buf[:k])
					bs.wrote += int64(w)
					if werr != nil {
						bs.writeEnd = endKind(werr)
						bs.end = "write failed"
						break
					}
				}
				if err != nil {
					bs.end = endKind(err)
					break
				}
			}
			if bs.end == "eof" {
				bs.fin = true
			}
		case "fin_early":
			if bs.readUpTo(c, chaosPreamble+p.r) == nil && bs.writePieces(c, down, 0, p.downCuts, p.downPauses) == nil {
				bs.fin = true // may turn into an RST: unread bytes at close
			}
		}
	}
}

// cutsIn keeps the cuts (and their pauses) that fall inside the first n
// bytes: a backend that resets after n bytes pauses only while it sends
// them. Cuts past n all landing on n would add up to one long silence
// before the reset (past idle_timeout: a legitimate timeout, not the
// reset the judge expects).
func cutsIn(cuts []int, pauses []time.Duration, n int) ([]int, []time.Duration) {
	var c []int
	var p []time.Duration
	for i, at := range cuts {
		if at < n {
			c, p = append(c, at), append(p, pauses[i])
		}
	}
	return c, p
}

// --- http1 ---

func (s *chaosSession) httpRequest(connClose bool) (head string, body []byte) {
	body = chaosUp[:s.up]
	var b strings.Builder
	if s.up > 0 || s.client == "abort_req" {
		fmt.Fprintf(&b, "POST /s/%d HTTP/1.1\r\nHost: web\r\nContent-Length: %d\r\n", s.id, s.up)
	} else {
		fmt.Fprintf(&b, "GET /s/%d HTTP/1.1\r\nHost: web\r\n", s.id)
	}
	if connClose {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return b.String(), body
}

func (s *chaosSession) runHTTPClient(c *net.TCPConn) chaosSaw {
	var cs chaosSaw
	head, body := s.httpRequest(s.client == "connclose")
	send := func() error {
		k, err := io.WriteString(c, head)
		cs.wrote += int64(k)
		if err != nil {
			cs.writeEnd = endKind(err)
			return err
		}
		return cs.writePieces(c, body, 0, s.upCuts, s.upPauses)
	}
	br := bufio.NewReader(c)
	readResp := func(limit int) error {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			cs.bodyEnd = "response: " + endKind(err)
			return err
		}
		cs.status = resp.StatusCode
		err = cs.readUpTo(resp.Body, limit)
		if errors.Is(err, io.EOF) || err == nil && limit < 0 {
			cs.bodyEnd = "whole"
			return nil
		}
		if err != nil {
			cs.bodyEnd = endKind(err)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				cs.bodyEnd = "unexpected_eof"
			}
			return err
		}
		cs.bodyEnd = "partial"
		return nil
	}
	cs.end = ""
	switch s.client {
	case "normal", "closeinstant":
		if send() == nil && readResp(-1) == nil {
			cs.end = "closed"
			if s.client == "normal" {
				time.Sleep(time.Duration(s.id%40) * time.Millisecond) // a client that closes a little later
			}
		}
		cs.fin = cs.writeEnd == ""
	case "two":
		// two requests one after the other on the connection, the second
		// half-closed after it; the bodies read to the end.
		if send() == nil && readResp(-1) == nil && send() == nil {
			if err := c.CloseWrite(); err == nil {
				cs.fin = true
			}
			if readResp(-1) == nil {
				_, _, cs.end = hashAll(br)
			}
		}
	case "halfclose", "connclose":
		if send() == nil {
			if s.client == "halfclose" {
				if err := c.CloseWrite(); err != nil {
					cs.writeEnd = endKind(err)
				} else {
					cs.fin = true
				}
			}
			if readResp(-1) == nil {
				rest, _, end := hashAll(br)
				cs.end = end
				if rest != 0 {
					cs.end += fmt.Sprintf(" (+%d bytes after the response)", rest)
				}
			}
		}
	case "pause":
		if send() == nil {
			time.Sleep(s.pause) // the paused reader under test
			if readResp(-1) == nil {
				if err := c.CloseWrite(); err == nil {
					cs.fin = true
				}
				_, _, cs.end = hashAll(br)
			}
		}
	case "abort_req":
		k, err := io.WriteString(c, head)
		cs.wrote += int64(k)
		if err == nil {
			k, err = c.Write(body[:s.k])
			cs.wrote += int64(k)
		}
		if err != nil {
			cs.writeEnd = endKind(err)
		}
		time.Sleep(time.Duration(20+s.id%60) * time.Millisecond) // let the bytes reach the backend
		cs.end = "closed"
		if s.rst {
			cs.rst = true
			_ = c.SetLinger(0)
		} else {
			cs.fin = true
		}
	case "abort_resp":
		if send() == nil {
			readResp(s.k)
		}
		cs.end = "closed"
		cs.rst = true
		_ = c.SetLinger(0)
	}
	return cs
}

func chaosHTTPBackend(plans map[int]*chaosSession, log *chaosBackendLog) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		_ = c.SetDeadline(time.Now().Add(40 * time.Second))
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			var id int
			if _, err := fmt.Sscanf(req.URL.Path, "/s/%d", &id); err != nil || plans[id] == nil {
				log.mu.Lock()
				log.stray = append(log.stray, "bad path "+req.URL.Path)
				log.mu.Unlock()
				return
			}
			p := plans[id]
			var bs chaosSaw
			if err := bs.readUpTo(req.Body, -1); err != nil && !errors.Is(err, io.EOF) {
				bs.bodyEnd = bs.end
				if errors.Is(err, io.ErrUnexpectedEOF) {
					bs.bodyEnd = "unexpected_eof"
				}
				log.put(id, bs)
				return
			}
			bs.bodyEnd, bs.end = "whole", ""
			down := chaosDown[:p.down]
			switch p.server {
			case "cl", "reset_cl":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", p.down)
			case "chunked":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
			case "closedelim", "reset_closedelim":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
			case "noanswer":
				time.Sleep(chaosStall) // the silent backend under test
				log.put(id, bs)
				return
			}
			switch p.server {
			case "cl", "closedelim":
				bs.writePieces(c, down, 0, p.downCuts, p.downPauses)
			case "chunked":
				prev := 0
				cuts := append(append([]int{}, p.downCuts...), p.down)
				for i, x := range cuts {
					if x > prev {
						if _, err := fmt.Fprintf(c, "%x\r\n", x-prev); err != nil {
							break
						}
						k, err := c.Write(down[prev:x])
						bs.wrote += int64(k)
						if err != nil {
							bs.writeEnd = endKind(err)
							break
						}
						io.WriteString(c, "\r\n")
						prev = x
					}
					if i < len(p.downPauses) {
						time.Sleep(p.downPauses[i]) // the backend's pause under test
					}
				}
				io.WriteString(c, "0\r\n\r\n")
			case "reset_cl", "reset_closedelim":
				cuts, pauses := cutsIn(p.downCuts, p.downPauses, p.k)
				bs.writePieces(c, down[:p.k], 0, cuts, pauses)
				bs.drained = loopback.Acked(c, 2*time.Second)
				bs.rst = true
				_ = c.SetLinger(0)
				log.put(id, bs)
				return
			}
			bs.fin = bs.writeEnd == ""
			log.put(id, bs)
			if p.server == "closedelim" {
				return
			}
		}
	}
}

// --- running a batch ---

func runChaosBatch(t *testing.T, b *chaosBatch) {
	topo := newCountingTopology(t)
	plans := map[int]*chaosSession{}
	for _, s := range b.sessions {
		plans[s.id] = s
	}
	log := &chaosBackendLog{}
	var ls []ListenerOpts
	for _, l := range b.listeners {
		addr := netip.AddrPortFrom(topo.WebAddr, l.webPort).String()
		f := chaosTCPBackend(plans, log)
		if l.mode == "http1" {
			f = chaosHTTPBackend(plans, log)
		}
		scriptBackend(t, topo.Web, addr, f)
		lo := ListenerOpts{
			Name: l.name, Listen: netip.AddrPortFrom(topo.ProxyFront, l.port).String(), Backend: addr,
			IdleTimeout: l.idle,
			Front:       CloseOpts{TimeWait: l.front, PeerFinGrace: l.grace, Fallback: l.ffb, AdaptiveGrace: l.adaptive},
			Back:        CloseOpts{TimeWait: l.back, PeerFinGrace: l.grace, Fallback: l.bfb, AdaptiveGrace: l.adaptive},
		}
		if l.mode == "http1" {
			lo.Protocol = "http1"
		}
		ls = append(ls, lo)
	}
	cp := startCloseproxy(t, topo, topo.Proxy, closeproxyConfigWith(GlobalOpts{AdminListen: adminAddr, Relay: b.relay}, ls...))

	// The sessions, at most 6 at once.
	seen := map[string]chaosSaw{} // by listener + client address
	byAddr := map[string]*chaosSession{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for _, s := range b.sessions {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			time.Sleep(s.delay) // spread the starts
			c, err := dialFrom(t, topo.LB, netip.AddrPortFrom(topo.ProxyFront, s.l.port).String())
			if err != nil {
				t.Errorf("%s: %v", s, err)
				return
			}
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			var cs chaosSaw
			if s.l.mode == "tcp" {
				cs = s.runTCPClient(c)
			} else {
				cs = s.runHTTPClient(c)
			}
			cs.local, cs.at = c.LocalAddr().String(), time.Now()
			cs.markEOF()
			c.Close()
			mu.Lock()
			key := s.l.name + " " + cs.local
			if _, dup := seen[key]; dup {
				t.Logf("client address %s reused on %s", cs.local, s.l.name)
			}
			seen[key], byAddr[key] = cs, s
			mu.Unlock()
		})
	}
	wg.Wait()

	for _, l := range b.listeners {
		n := 0
		for _, s := range b.sessions {
			if s.l == l {
				n++
			}
		}
		if n == 0 {
			continue
		}
		t.Run(l.name, func(t *testing.T) {
			recs := waitListenerRecords(t, cp, l.name, n, 30*time.Second)
			for _, r := range recs {
				key := l.name + " " + r.Str("front.peer")
				s, cs := byAddr[key], seen[key]
				if s == nil {
					t.Errorf("record names a client no session had: %s", rawRecord(r))
					continue
				}
				be, beOK := log.get(s.id, 3*time.Second)
				var probs []string
				if l.mode == "tcp" {
					probs = judgeTCP(s, cs, be, beOK, r)
				} else {
					probs = judgeHTTP(s, cs, be, beOK, r)
				}
				for _, p := range probs {
					if os.Getenv("CLOSEPROXY_CHAOS_KNOWN") == "log" && (strings.HasPrefix(p, "LOST BEFORE RESET") ||
						strings.HasPrefix(p, "UNREAD BEFORE RESET") || strings.HasPrefix(p, "RESPONSE END") || graceBetLost(r, p, cs, be, beOK)) {
						t.Logf("KNOWN FINDING %s\n  problem: %s", s, p)
						continue
					}
					t.Errorf("%s\n  listener: %s\n  problem: %s\n  client: %s\n  backend(%v): %s\n  %s\n  %s", s, l, p, cs.brief(), beOK, be.brief(), legs(r), rawRecord(r))
				}
			}
			listen, web := netip.AddrPortFrom(topo.ProxyFront, l.port), netip.AddrPortFrom(topo.WebAddr, l.webPort)
			held, live, busy := scopeTimeWait(t, topo, 15*time.Second, listen, web)
			if len(busy) > 0 {
				all := cp.Records()
				if why := lostResets(busy, topo.LB, topo.Web, all, tcpCounterValues(t, topo, topo.Proxy), resetsSent(t, topo, topo.Proxy)); why != "" {
					t.Errorf("%d sockets still opening or closing 15 s after the sessions ended (not lost resets: %s):\n%s", len(busy), why, namedBy(busy, recs))
				} else {
					t.Logf("%d peer sockets in FIN-WAIT-2 after the proxy's reset: lost RSTs\n%s", len(busy), namedBy(busy, all))
				}
			}
			late, lateUnknown := lateClosers(recs)
			// A pooled back connection can serve a later session and be
			// closed by it before the earlier session's record is written
			// (a paused client keeps its front leg long after its answer):
			// judged by the order written, the pooled record would be taken
			// for the last on that 4-tuple. The record that closed it is.
			sort.SliceStable(recs, func(i, j int) bool {
				return recs[i].Str("back.close") == "pooled" && recs[j].Str("back.close") != "pooled"
			})
			if os.Getenv("CLOSEPROXY_CHAOS_KNOWN") == "log" {
				recs = knownCrossings(t, recs, held)
			}
			chk := judgeClaims(held, live, recs)
			if len(chk.wrong) > 0 {
				for _, w := range chk.wrong {
					for _, r := range recs {
						if strings.HasPrefix(w, fmt.Sprintf("record %v ", r["id"])) {
							s := byAddr[l.name+" "+r.Str("front.peer")]
							t.Logf("wrong claim detail: %v\n  %s\n  %s", s, legs(r), rawRecord(r))
							for _, leg := range []string{"front", "back"} {
								for _, o := range cp.Records() {
									if o.Str(leg+".local") == r.Str(leg+".local") && o.Str(leg+".peer") == r.Str(leg+".peer") && o["id"] != r["id"] {
										t.Logf("  another record names its %s 4-tuple: %s", leg, rawRecord(o))
									}
								}
							}
						}
					}
				}
				t.Logf("ss lb:\n%s\nss proxy:\n%s\nss web:\n%s", topo.Exec(t, topo.LB, "ss", "-tan"), topo.Exec(t, topo.Proxy, "ss", "-tan"), topo.Exec(t, topo.Web, "ss", "-tan"))
			}
			if bound := max(2, 2*len(recs)/20) + lateUnknown; chk.unknown > bound {
				t.Logf("NOTE: %d legs unknown, more than the matrix's bound %d (not counted as a bug: docs admit unknown)", chk.unknown, bound)
			}
			requireAgreement(t, topo, recs, chk, 1<<30)
			showUnknown(t, held, recs)
			tally := map[string]int{}
			for _, r := range recs {
				if s := byAddr[l.name+" "+r.Str("front.peer")]; s != nil {
					tally[fmt.Sprintf("%s/%s:%s", s.client, s.server, r.Str("outcome"))]++
				}
			}
			t.Logf("%s relay=%s: %d records, %d late closers (%d unknown); client/server:outcome %s", l, b.relay, len(recs), late, lateUnknown, fmtCount(tally))
			if all := byListener(cp.Records(), l.name); len(all) != len(recs) {
				t.Errorf("%d records of %s once settled, %d before: one per connection", len(all), l.name, len(recs))
			}
		})
	}
	log.mu.Lock()
	if len(log.stray) > 0 {
		t.Logf("backend connections without a session: %q", log.stray)
	}
	log.mu.Unlock()
}

func rawRecord(r Record) string {
	b, _ := json.Marshal(r)
	return string(b)
}

func (s chaosSaw) brief() string {
	sum := sha256.Sum256(s.got)
	return fmt.Sprintf("read %d bytes (sha256 %s…) end %q body %q status %d; wrote %d writeEnd %q fin %v rst %v drained %v",
		len(s.got), hex.EncodeToString(sum[:6]), s.end, s.bodyEnd, s.status, s.wrote, s.writeEnd, s.fin, s.rst, s.drained)
}

// prefixOK: got is a prefix of want (nothing corrupted or invented).
func prefixOK(got, want []byte) bool {
	return len(got) <= len(want) && bytes.Equal(got, want[:len(got)])
}

func judgeTCP(s *chaosSession, cl, be chaosSaw, beOK bool, r Record) []string {
	var p []string
	up, down := s.upload(), chaosDown[:s.down]
	if s.server == "echo" {
		down = chaosUp[:s.up]
	}
	outcome := r.Str("outcome")
	if !prefixOK(cl.got, down) {
		p = append(p, fmt.Sprintf("the client read %d bytes that are not a prefix of the backend's stream", len(cl.got)))
	}
	if beOK && !prefixOK(be.got, up) {
		p = append(p, fmt.Sprintf("the backend read %d bytes that are not a prefix of the client's stream", len(be.got)))
	}
	// A clean EOF only after every byte the other side wrote, ended by its FIN.
	// A backend silent past its grace counts as done (the bet): its
	// stream ended, if it had nothing more to write.
	bet := r.Str("back.reason") == "grace_expired" && beOK && be.writeEnd == "" && int64(len(cl.got)) == be.wrote
	if cl.end == "eof" && beOK && !bet && (int64(len(cl.got)) != be.wrote || !be.fin) {
		p = append(p, fmt.Sprintf("DISGUISED CUT: the client read a clean EOF after %d bytes; the backend wrote %d (fin %v)", len(cl.got), be.wrote, be.fin))
	}
	if beOK && be.end == "eof" && (int64(len(be.got)) != cl.wrote || !cl.fin) {
		p = append(p, fmt.Sprintf("DISGUISED CUT: the backend read a clean EOF after %d bytes; the client wrote %d (fin %v)", len(be.got), cl.wrote, cl.fin))
	}
	cleanClient := s.client == "halfclose" || s.client == "readclose" || s.client == "late_send" || s.client == "slowread" || s.client == "echo"
	cleanServer := s.server == "wait_eof" || s.server == "answer_fin" || s.server == "answer_halfclose" || s.server == "echo"
	switch {
	case cleanClient && cleanServer:
		if outcome != "ok" || r["front.cut"] == true || r["back.cut"] == true {
			p = append(p, fmt.Sprintf("polite peers: outcome %q (error %q) front.cut %v back.cut %v, want ok and nothing cut", outcome, r.Str("error"), r["front.cut"], r["back.cut"]))
		}
		if !bytes.Equal(cl.got, down) {
			p = append(p, fmt.Sprintf("DATA LOST: the client read %d of %d bytes (whole %v)", len(cl.got), len(down), bytes.Equal(cl.got, down)))
		}
		if !beOK {
			p = append(p, "the backend reported nothing")
		} else if !bytes.Equal(be.got, up) {
			p = append(p, fmt.Sprintf("DATA LOST: the backend read %d of %d bytes", len(be.got), len(up)))
		}
		if cl.writeEnd != "" || int(cl.wrote) != len(up) {
			p = append(p, fmt.Sprintf("the client's upload failed: wrote %d of %d (%s)", cl.wrote, len(up), cl.writeEnd))
		}
		if beOK && (be.writeEnd != "" || int(be.wrote) != len(down)) {
			p = append(p, fmt.Sprintf("the backend's answer failed: wrote %d of %d (%s)", be.wrote, len(down), be.writeEnd))
		}
		if cl.end != "closed" && !endedWell(cl.end, r, "front") {
			p = append(p, fmt.Sprintf("the client's read ended %q (front.close %q)", cl.end, r.Str("front.close")))
		}
		if beOK && be.end != "" && !endedWell(be.end, r, "back") {
			p = append(p, fmt.Sprintf("the backend's read ended %q (back.close %q)", be.end, r.Str("back.close")))
		}
		if beOK {
			bc := saw{in: int64(len(be.got)), wrote: be.wrote}
			cc := saw{in: int64(len(cl.got)), wrote: cl.wrote}
			if msg := recordedBytes(r, cc, bc, true); msg != "" {
				p = append(p, msg)
			}
		}
	case s.client == "abort_req":
		if outcome != "client_reset" {
			p = append(p, fmt.Sprintf("client reset mid-request: outcome %q, want client_reset", outcome))
		}
		if beOK && be.end != "reset" && be.end != "" {
			p = append(p, fmt.Sprintf("client reset mid-request: the backend's read ended %q, want reset", be.end))
		}
		if beOK && r["back.cut"] != true {
			p = append(p, fmt.Sprintf("client reset mid-request: back.cut %v, want true", r["back.cut"]))
		}
	case s.client == "abort_resp":
		delivered := beOK && r.Num("front.bytes_out") == float64(be.wrote) && be.fin && int(r.Num("back.bytes_out")) == len(up)
		if outcome != "client_reset" && !(outcome == "ok" && delivered) {
			p = append(p, fmt.Sprintf("client reset mid-response: outcome %q (front.close %q), want client_reset (or ok with everything delivered: %v)", outcome, r.Str("front.close"), delivered))
		}
	case s.server == "reset":
		// The proxy may reset a backend silent past its grace before the
		// backend's own RST: then ok, if the client had every byte.
		proxyFirst := r.Str("back.close") == "reset" && beOK && int64(len(cl.got)) == be.wrote && outcome == "ok"
		if outcome != "backend_reset" && !proxyFirst {
			p = append(p, fmt.Sprintf("backend reset: outcome %q, want backend_reset", outcome))
		}
		if cl.end == "eof" {
			p = append(p, "backend reset reached the client as EOF")
		}
		if beOK && be.drained && len(cl.got) < int(be.wrote) && cl.writeEnd == "" && s.pause == 0 {
			p = append(p, fmt.Sprintf("LOST BEFORE RESET: backend reset after its %d bytes were acknowledged: the client got only %d (the bytes before the reset must be delivered)", be.wrote, len(cl.got)))
		}
	case s.server == "stall":
		if outcome != "timeout" {
			p = append(p, fmt.Sprintf("backend stalled past idle_timeout: outcome %q, want timeout", outcome))
		}
		if cl.end == "eof" {
			p = append(p, "stalled backend's cut reached the client as EOF")
		}
	case s.server == "fin_early":
		if outcome != "backend_reset" {
			p = append(p, fmt.Sprintf("backend closed with the upload in flight: outcome %q (back.close %q), want backend_reset", outcome, r.Str("back.close")))
		}
	}
	if outcome == "ok" && beOK {
		if !(s.client == "abort_resp") && int64(len(cl.got)) != be.wrote {
			p = append(p, fmt.Sprintf("outcome ok but the client read %d of the %d bytes the backend wrote", len(cl.got), be.wrote))
		}
		if cleanServer && int64(len(be.got)) != cl.wrote {
			p = append(p, fmt.Sprintf("outcome ok but the backend read %d of the %d bytes the client wrote", len(be.got), cl.wrote))
		}
	}
	// Bytes the backend's kernel saw acknowledged by the proxy's before it
	// reset: the proxy's kernel had them; the proxy must read them.
	if beOK && be.rst && be.drained && r.Num("back.bytes_in") < float64(be.wrote) {
		p = append(p, fmt.Sprintf("UNREAD BEFORE RESET: the backend's %d bytes were all acknowledged by the proxy's kernel before its RST, back.bytes_in %v (client reading promptly: %v)", be.wrote, r.Num("back.bytes_in"), cl.writeEnd == "" && s.pause == 0))
	}
	return p
}

func judgeHTTP(s *chaosSession, cl, be chaosSaw, beOK bool, r Record) []string {
	var p []string
	outcome := r.Str("outcome")
	down := chaosDown[:s.down]
	if cl.status == 200 && s.client != "two" && !prefixOK(cl.got, down) {
		p = append(p, fmt.Sprintf("the client's body (%d bytes) is not a prefix of the backend's", len(cl.got)))
	}
	if beOK && !prefixOK(be.got, chaosUp[:s.up]) {
		p = append(p, fmt.Sprintf("the backend's request body (%d bytes) is not a prefix of the client's", len(be.got)))
	}
	cleanServer := s.server == "cl" || s.server == "chunked" || s.server == "closedelim"
	switch {
	case cleanServer && s.client == "two":
		want := append(append([]byte{}, down...), down...)
		if s.server == "closedelim" {
			want = down // the first answer closes the connection
		}
		if outcome != "ok" && !(s.server == "closedelim" && outcome == "late_data") {
			p = append(p, fmt.Sprintf("two requests: outcome %q (error %q)", outcome, r.Str("error")))
		}
		if !bytes.Equal(cl.got, want) {
			p = append(p, fmt.Sprintf("DATA LOST: two requests: bodies %d of %d bytes, %q, status %d", len(cl.got), len(want), cl.bodyEnd, cl.status))
		}
	case cleanServer && (s.client == "normal" || s.client == "halfclose" || s.client == "pause" || s.client == "closeinstant" || s.client == "connclose"):
		if outcome != "ok" || r["front.cut"] == true || r["back.cut"] == true {
			p = append(p, fmt.Sprintf("polite peers: outcome %q (error %q) front.cut %v back.cut %v, want ok and nothing cut", outcome, r.Str("error"), r["front.cut"], r["back.cut"]))
		}
		if cl.status == 200 && bytes.Equal(cl.got, down) && cl.bodyEnd != "whole" {
			p = append(p, fmt.Sprintf("RESPONSE END: every body byte arrived but the body read ended %q, not its end (server %s)", cl.bodyEnd, s.server))
		} else if cl.status != 200 || cl.bodyEnd != "whole" || !bytes.Equal(cl.got, down) {
			p = append(p, fmt.Sprintf("DATA LOST: status %d, body %d of %d bytes, %q", cl.status, len(cl.got), len(down), cl.bodyEnd))
		}
		if !beOK || be.bodyEnd != "whole" || !bytes.Equal(be.got, chaosUp[:s.up]) {
			p = append(p, fmt.Sprintf("DATA LOST: the backend got %d of %d request body bytes (%q, reported %v)", len(be.got), s.up, be.bodyEnd, beOK))
		}
		if cl.writeEnd != "" {
			p = append(p, fmt.Sprintf("the client's request failed: %s", cl.writeEnd))
		}
		if cl.end != "closed" && cl.end != "" && !endedWell(cl.end, r, "front") {
			p = append(p, fmt.Sprintf("the client's read ended %q after the response (front.close %q)", cl.end, r.Str("front.close")))
		}
	case s.client == "abort_req":
		if outcome != "client_aborted" && !(s.rst && outcome == "client_reset") {
			p = append(p, fmt.Sprintf("client left mid-body (rst %v): outcome %q, want client_aborted", s.rst, outcome))
		}
		if beOK && (be.bodyEnd == "whole" || be.bodyEnd == "unexpected_eof" || be.bodyEnd == "eof") {
			p = append(p, fmt.Sprintf("client left mid-body: the backend's body read ended %q, want an RST", be.bodyEnd))
		}
	case s.client == "abort_resp":
		if outcome != "client_reset" && outcome != "ok" {
			p = append(p, fmt.Sprintf("client reset mid-response: outcome %q, want client_reset (or ok when everything was delivered)", outcome))
		}
	case strings.HasPrefix(s.server, "reset"):
		if outcome != "backend_reset" {
			p = append(p, fmt.Sprintf("backend reset mid-response: outcome %q, want backend_reset", outcome))
		}
		if cl.bodyEnd == "whole" {
			p = append(p, fmt.Sprintf("DISGUISED CUT: backend reset after %d of %d bytes, the client read a whole body of %d bytes (status %d)", s.k, s.down, len(cl.got), cl.status))
		}
		if beOK && be.drained && len(cl.got) < int(be.wrote) && cl.writeEnd == "" {
			p = append(p, fmt.Sprintf("LOST BEFORE RESET: backend reset after its %d body bytes were acknowledged: the client got only %d", be.wrote, len(cl.got)))
		}
	case s.server == "noanswer":
		if outcome != "timeout" || cl.status != 504 {
			p = append(p, fmt.Sprintf("silent backend: outcome %q, client status %d; want timeout and 504", outcome, cl.status))
		}
	}
	return p
}

// chaosRepro is a batch of n copies of one fixed session, to reproduce
// what a seed found (CLOSEPROXY_CHAOS_REPRO names which).
func chaosRepro(t *testing.T, name string, b, n int) *chaosBatch {
	l := &chaosListener{name: "chaos0", port: 8100, webPort: 9100, mode: "tcp", grace: "1s"}
	batch := &chaosBatch{relay: "loop", listeners: []*chaosListener{l}}
	if testRelay != "" {
		batch.relay = testRelay
	}
	for i := range n {
		s := &chaosSession{id: b*1000 + i, l: l, delay: time.Duration(i*150) * time.Millisecond}
		switch name {
		case "gracecut", "gracecut-nopause":
			// seed 4 session 1: a client that half-closes after its request,
			// a backend that answers at once, pauses past the grace, goes on.
			l.front, l.ffb, l.back, l.bfb, l.adaptive = "auto", "reset", "backend", "reset", "false"
			s.client, s.server = "halfclose", "answer_halfclose"
			s.up, s.up1, s.down = 1048, 1048, 728721
			s.downCuts, s.downPauses = []int{8073}, []time.Duration{1300 * time.Millisecond}
			if name == "gracecut" {
				s.pause = 2 * time.Second
			}
		case "gracecut-small":
			// seed 41 (goroutines) session 4006: a 16-byte request and its
			// half-close, a 633-byte answer with a 1.3 s pause after 412.
			l.front, l.ffb, l.back, l.bfb, l.adaptive = "nowhere", "fin", "nowhere", "fin", "false"
			s.client, s.server = "halfclose", "answer_fin"
			s.up, s.up1, s.down = 0, 0, 633
			s.downCuts, s.downPauses = []int{368, 412}, []time.Duration{0, 1300 * time.Millisecond}
		case "gracecut-eof":
			// seed 73 session 4027: an upload with a 1.3 s pause, its
			// half-close, an answer with a 30 ms pause after 22673 bytes;
			// front client: the client's end is the proxy's FIN.
			l.front, l.back, l.bfb = "client", "nowhere", "reset"
			s.client, s.server = "halfclose", "answer_fin"
			s.up, s.up1, s.down = 182012, 182012, 141233
			s.upCuts, s.upPauses = []int{145619}, []time.Duration{1300 * time.Millisecond}
			s.downCuts, s.downPauses = []int{22673, 77286}, []time.Duration{30 * time.Millisecond, 2 * time.Millisecond}
		case "gracebet-upload":
			// seed 89 (goroutines) session 9017: a 454-byte upload and its
			// half-close; the backend reads 397, answers 381 bytes, pauses
			// 1.3 s and closes early (graceBetLost when the bet loses).
			l.front, l.back, l.idle = "client", "nowhere", "3s"
			s.client, s.server = "halfclose", "fin_early"
			s.up, s.up1, s.down, s.r = 454, 454, 1564, 397
			s.downCuts, s.downPauses = []int{381, 479, 1176}, []time.Duration{1300 * time.Millisecond, 1300 * time.Millisecond, 2 * time.Millisecond}
		case "gracebet-early", "gracebet-defaults":
			// seed 101 (loops) session 4026: a 1-byte upload behind the
			// preamble, a 2 ms pause, the half-close; the backend answers 5
			// bytes at the preamble, pauses 200 ms twice and closes early.
			// The client's FIN acknowledges the answer so far and follows
			// its last byte: the bet is taken (graceBetLost).
			l.front, l.ffb, l.back, l.bfb, l.idle = "proxy", "reset", "nowhere", "reset", "3s"
			if name == "gracebet-defaults" { // the close policies' defaults
				l.front, l.ffb, l.back, l.bfb, l.idle = "proxy", "", "backend", "", ""
			}
			s.client, s.server = "halfclose", "fin_early"
			s.up, s.up1, s.down = 1, 1, 116
			s.upCuts, s.upPauses = []int{1}, []time.Duration{2 * time.Millisecond}
			s.downCuts, s.downPauses = []int{5, 51, 95}, []time.Duration{200 * time.Millisecond, 200 * time.Millisecond, 2 * time.Millisecond}
		case "resetloss":
			// seed 2 session 4: a backend that reads part of the upload,
			// sends ~900 KB, waits until they are acknowledged, resets.
			l.front, l.back, l.bfb = "nowhere", "auto", "reset"
			s.client, s.server = "halfclose", "reset"
			s.up, s.up1, s.down, s.k, s.r = 91462, 91462, 1554409, 944258, 2887
		case "unread":
			// seed 2 session 1024: a small answer acknowledged, then the RST,
			// while the upload still flows toward the backend.
			l.front, l.back = "proxy", "proxy"
			s.client, s.server = "readclose", "reset"
			s.up, s.up1, s.down, s.k, s.r = 1631973, 1631973, 343, 187, 295524
		case "closedelim", "closedelim-auto":
			// race seed 11 session 1017: http1, a client that half-closes
			// after its request, a close-delimited answer.
			l.mode, l.front, l.back = "http1", "nowhere", "nowhere"
			if name == "closedelim-auto" {
				l.front, l.ffb = "auto", "fin"
			}
			s.client, s.server = "halfclose", "closedelim"
			s.up, s.down = 136, 204083
			s.upCuts, s.upPauses = []int{39, 95}, []time.Duration{30 * time.Millisecond, 2 * time.Millisecond}
			s.downCuts, s.downPauses = []int{85254, 111628, 198753}, []time.Duration{30 * time.Millisecond, 2 * time.Millisecond, 0}
		case "abortfin":
			// race seed 13 session 29: a client that half-closed, has the
			// whole answer in its buffer, reads part and aborts.
			l.front, l.back = "proxy", "proxy"
			s.client, s.server, s.halfFirst = "abort_resp", "wait_eof", true
			s.up, s.up1, s.down, s.k = 189558, 189558, 247, 71
		case "rstrace":
			// seed 4 session 16: a client that half-closed, reads part of
			// a small answer and aborts as the proxy's safe reset goes.
			l.front, l.ffb, l.back, l.bfb, l.adaptive = "auto", "reset", "nowhere", "fin", "false"
			s.client, s.server, s.halfFirst = "abort_resp", "answer_halfclose", true
			s.up, s.up1, s.down, s.k = 794, 794, 1857, 182
			s.upCuts, s.upPauses = []int{231}, []time.Duration{200 * time.Millisecond}
		default:
			t.Fatalf("CLOSEPROXY_CHAOS_REPRO %q: unknown", name)
		}
		batch.sessions = append(batch.sessions, s)
	}
	return batch
}

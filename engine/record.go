package engine

import (
	"net/netip"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/closeproxy/closeproxy/policy"
)

// Outcome says how a session ended, in one word. Only OutcomeOK means
// every stream reached its end: any other outcome of a relayed session
// means something was cut, refused or failed, and the legs' cut fields say
// which peer got a stream cut short.
type Outcome string

const (
	OutcomeOK             Outcome = "ok"               // every stream ended in order, nothing cut
	OutcomeDialFailed     Outcome = "dial_failed"      // the backend refused, timed out or is unreachable
	OutcomePortsExhausted Outcome = "ports_exhausted"  // no local port toward the backend (EADDRNOTAVAIL): ours, not the backend's
	OutcomeTimeout        Outcome = "timeout"          // idle_timeout with no bytes moving, a peer silent after the proxy's FIN, or (http1) a backend that never answered
	OutcomeClientReset    Outcome = "client_reset"     // the client sent an RST
	OutcomeBackendReset   Outcome = "backend_reset"    // the backend sent an RST, or closed mid-response
	OutcomeClientAborted  Outcome = "client_aborted"   // http1: the client ended before its request was complete
	OutcomeBadProxyHeader Outcome = "bad_proxy_header" // malformed, slow, missing (required) or untrusted PROXY header
	OutcomeDrained        Outcome = "drained"          // cut by shutdown after shutdown_timeout (or a second SIGTERM)
	OutcomeLateData       Outcome = "late_data"        // a peer sent bytes that could no longer be delivered
	OutcomeError          Outcome = "error"            // another socket error; see error
	OutcomeInternalError  Outcome = "internal_error"   // a bug: a panic in the session, recovered
	OutcomeBadRequest     Outcome = "bad_request"      // http1: a request the proxy refused with 400 (ambiguous framing, malformed)
	OutcomeBadResponse    Outcome = "bad_response"     // http1: a malformed response from the backend
	OutcomePoolExhausted  Outcome = "pool_exhausted"   // pool.max_conns reached for connect_timeout
	OutcomeOverLimit      Outcome = "over_limit"       // the listener's max_connections reached: reset at once
	OutcomeFamilyMismatch Outcome = "family_mismatch"  // source = "client": the client's address family differs from the backend's
)

// Outcomes is every Outcome, for the metrics' series that exist at zero
// before their first session.
var Outcomes = []Outcome{OutcomeOK, OutcomeDialFailed, OutcomePortsExhausted, OutcomeTimeout,
	OutcomeClientReset, OutcomeBackendReset, OutcomeClientAborted, OutcomeBadProxyHeader,
	OutcomeDrained, OutcomeLateData, OutcomeError, OutcomeInternalError, OutcomeBadRequest,
	OutcomeBadResponse, OutcomePoolExhausted, OutcomeOverLimit, OutcomeFamilyMismatch}

// LegRecord is what happened on one leg. Times are since accept; a negative
// duration means the event did not happen.
type LegRecord struct {
	FirstFIN policy.Side  // whose FIN came first: client|backend|proxy|both|none|unknown
	Close    policy.Close // how the proxy's end closed: fin|reset|peer_reset|error|pooled|none
	TimeWait policy.Side  // where TIME-WAIT landed: client|backend|proxy|both|none|unknown
	Wanted   string       // the configured target, as the user spells it
	// Target is the target in force for the close: Wanted, or with auto
	// the one auto chose. Empty while no close was decided.
	Target     policy.Target
	AsWanted   bool          // TIME-WAIT landed where Target wanted it
	Reason     policy.Reason // why the table's plain path was left, if so
	Cut        bool          // the stream toward this leg's peer was cut short: an RST before its end, or after the FIN with bytes unacknowledged
	AutoReason string        // with time_wait = "auto": why it chose what it chose
	BytesIn    int64         // bytes received from the peer
	BytesOut   int64         // bytes sent to the peer; at the end, less what a reset discarded unacknowledged
	FINIn      time.Duration
	FINOut     time.Duration
	RSTOut     time.Duration
	Local      netip.AddrPort // the proxy's address on this leg
	Peer       netip.AddrPort // the peer's address on this leg

	leg       policy.Leg
	discarded int64 // of BytesOut, what a reset threw away unacknowledged (taken off at the end)
}

// Teardown is the record of one session: the struct is the schema (the
// README documents each key). The engine and the session fill it through
// a Recorder; the caller logs it once.
type Teardown struct {
	ID            uint64
	Listener      string
	Backend       string
	Client        netip.AddrPort // the real client: from the PROXY header when present
	LB            netip.AddrPort // the socket's peer, when it differs from Client
	ProxyProtocol string         // v1|v2|none
	OriginalDst   netip.AddrPort // intercept: the address the client dialed; unset otherwise
	Front         LegRecord
	Back          LegRecord
	BackConnect   time.Duration // -1: no dial attempted
	BackPooled    bool          // a backend connection came ready from the pool
	BackReused    bool          // a backend connection had served an earlier request
	BackRequests  int           // http1: requests sent to the backend; tcp: 0
	BackServer    string        // the server used (or last tried), as configured; empty: none tried
	BackTries     int           // servers tried for a connection: 1 unless a dial failed and the next was tried
	Duration      time.Duration
	Outcome       Outcome
	Err           error
}

func newLegRecord(leg policy.Leg, target policy.Target) LegRecord {
	return LegRecord{
		leg: leg, FirstFIN: policy.SideNone, TimeWait: policy.SideNone, Close: policy.CloseNone,
		Wanted: target.Word(leg), FINIn: -1, FINOut: -1, RSTOut: -1,
	}
}

// Leg returns the record of leg l.
func (t *Teardown) Leg(l policy.Leg) *LegRecord {
	if l == policy.Front {
		return &t.Front
	}
	return &t.Back
}

// MarshalLogObject renders the record flat under fixed keys, always the same
// set.
func (t *Teardown) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddUint64("id", t.ID)
	enc.AddString("listener", t.Listener)
	enc.AddString("backend", t.Backend)
	enc.AddString("client", addrString(t.Client))
	enc.AddString("lb", addrString(t.LB))
	enc.AddString("proxy_protocol", t.ProxyProtocol)
	t.Front.encode(enc, frontKeys)
	enc.AddString("front.original_dst", addrString(t.OriginalDst))
	t.Back.encode(enc, backKeys)
	enc.AddFloat64("back.connect_ms", millis(t.BackConnect))
	enc.AddBool("back.pooled", t.BackPooled)
	enc.AddBool("back.reused", t.BackReused)
	enc.AddInt("back.requests", t.BackRequests)
	enc.AddString("back.server", t.BackServer)
	enc.AddInt("back.tries", t.BackTries)
	enc.AddFloat64("duration_ms", millis(t.Duration))
	enc.AddString("outcome", string(t.Outcome))
	enc.AddString("error", t.errText())
	return nil
}

// errText is the record's error: its text, or empty.
func (t *Teardown) errText() string {
	if t.Err == nil {
		return ""
	}
	return t.Err.Error()
}

func (l *LegRecord) encode(enc zapcore.ObjectEncoder, k *legKeys) {
	enc.AddString(k.firstFIN, string(l.FirstFIN))
	enc.AddString(k.close, string(l.Close))
	enc.AddString(k.timeWait, string(l.TimeWait))
	enc.AddString(k.wanted, l.Wanted)
	enc.AddString(k.target, l.Target.Word(l.leg))
	enc.AddBool(k.asWanted, l.AsWanted)
	enc.AddString(k.reason, string(l.Reason))
	enc.AddBool(k.cut, l.Cut)
	enc.AddString(k.autoReason, l.AutoReason)
	enc.AddInt64(k.bytesIn, l.BytesIn)
	enc.AddInt64(k.bytesOut, l.BytesOut)
	enc.AddFloat64(k.finIn, millis(l.FINIn))
	enc.AddFloat64(k.finOut, millis(l.FINOut))
	enc.AddFloat64(k.rstOut, millis(l.RSTOut))
	enc.AddString(k.local, addrString(l.Local))
	enc.AddString(k.peer, addrString(l.Peer))
}

// legKeys are one leg's keys in the record, declared once: joining the
// prefix at each record cost an allocation per key, 32 a session.
type legKeys struct {
	firstFIN, close, timeWait, wanted, target, asWanted, reason, cut, autoReason,
	bytesIn, bytesOut, finIn, finOut, rstOut, local, peer string
	json *legKeys // the same keys as AppendJSON writes them
}

var frontKeys, backKeys = newLegKeys("front."), newLegKeys("back.")

func newLegKeys(p string) *legKeys {
	k := &legKeys{
		firstFIN: p + "first_fin", close: p + "close", timeWait: p + "time_wait", wanted: p + "wanted",
		target: p + "target", asWanted: p + "as_wanted", reason: p + "reason", cut: p + "cut",
		autoReason: p + "auto_reason", bytesIn: p + "bytes_in", bytesOut: p + "bytes_out",
		finIn: p + "fin_in_ms", finOut: p + "fin_out_ms", rstOut: p + "rst_out_ms",
		local: p + "local", peer: p + "peer",
	}
	j := jsonKeys(*k)
	k.json = &j
	return k
}

// Fields returns the record as zap fields for one log line.
func (t *Teardown) Fields() []zap.Field {
	return []zap.Field{zap.Inline(t)}
}

// millis renders a duration as milliseconds with microsecond precision; a
// negative duration (the event did not happen) is -1.
func millis(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return float64(d.Microseconds()) / 1000
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

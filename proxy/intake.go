package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/closeproxy/closeproxy/config"
	"github.com/closeproxy/closeproxy/engine"
)

// intake is what the PROXY header step learned about a new connection.
type intake struct {
	version string         // v1 | v2 | none
	client  netip.AddrPort // the real client
	dest    netip.AddrPort // the address the client connected to
	reader  *bufio.Reader  // the client's bytes from here on, header consumed
}

// leftover returns the bytes read past the header, still to relay.
func (in intake) leftover() []byte {
	if in.reader == nil || in.reader.Buffered() == 0 {
		return nil
	}
	b, _ := in.reader.Peek(in.reader.Buffered())
	return b
}

// errBadProxyHeader marks every refusal of the intake step for what the
// client sent (or did not send in time).
var errBadProxyHeader = errors.New("bad PROXY header")

// intakeOutcome is the outcome of a session refused at its intake: the
// client's reset or shutdown cut it, else a bad header.
func intakeOutcome(err error) engine.Outcome {
	switch {
	case errors.Is(err, errIntakeReset):
		return engine.OutcomeClientReset
	case errors.Is(err, errIntakeDrained):
		return engine.OutcomeDrained
	}
	return engine.OutcomeBadProxyHeader
}

// readIntake reads a PROXY header as the listener's mode says: with a
// deadline, until the header is complete, and refusing a header from a
// source outside proxy_protocol_trusted. Once drain is done (shutdown ran
// out of time) the wait ends with errIntakeDrained.
func readIntake(c *net.TCPConn, l *config.Listener, drain context.Context) (intake, error) {
	in := intake{version: "none", client: addrPort(c.RemoteAddr()), dest: addrPort(c.LocalAddr())}
	if l.ProxyProtocol == config.ProxyProtocolOff {
		return in, nil
	}
	trusted := isTrusted(in.client.Addr(), l.ProxyProtocolTrusted)
	if !trusted && l.ProxyProtocol == config.ProxyProtocolRequired {
		return in, fmt.Errorf("%w: source %s is not in proxy_protocol_trusted", errBadProxyHeader, in.client.Addr())
	}
	br := bufio.NewReader(rawReader(c)) // raw system calls, as http1 reads on
	in.reader = br
	if err := c.SetReadDeadline(time.Now().Add(l.ProxyProtocolTimeout)); err != nil {
		return in, fmt.Errorf("set header deadline: %w", err)
	}
	drained := make(chan struct{})
	stop := context.AfterFunc(drain, func() {
		defer close(drained)
		_ = c.SetReadDeadline(time.Now())
	})
	hdr, err := readHeader(br)
	if !stop() {
		<-drained // its deadline is set: the one below comes after it
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, errSilent) {
			err = errIntakeDrained
		}
	}
	if errors.Is(err, errSignaturePartway) {
		err = timedOutPartway(l, false)
	}
	_ = c.SetReadDeadline(time.Time{})
	return in, in.judge(hdr, err, l, trusted)
}

// judge takes what reading a header gave (the header, or why there is
// none) as the listener's mode says: the header's addresses, no header,
// or a refusal (wrapping errBadProxyHeader). errSilent: nothing came
// before proxy_protocol_timeout; os.ErrDeadlineExceeded: part of a
// header.
func (in *intake) judge(hdr *proxyproto.Header, err error, l *config.Listener, trusted bool) error {
	switch {
	case errors.Is(err, errIntakeDrained):
		return fmt.Errorf("PROXY header: %w", err)
	case errors.Is(err, syscall.ECONNRESET):
		// the client's reset, not its header: a load balancer's TCP check
		// that connects and resets ends so
		return fmt.Errorf("PROXY header: %w: %w", errIntakeReset, err)
	case (errors.Is(err, errSilent) || errors.Is(err, errClosedEmpty)) && l.ProxyProtocol == config.ProxyProtocolOptional:
		// a client that speaks second sent nothing, or closed at once (a
		// load balancer's TCP check): no header, as with "off"
	case errors.Is(err, errSilent):
		return fmt.Errorf("%w: nothing received within proxy_protocol_timeout %s (proxy_protocol = \"required\")", errBadProxyHeader, l.ProxyProtocolTimeout)
	case errors.Is(err, errClosedEmpty):
		return fmt.Errorf("%w: the client closed before sending one (proxy_protocol = \"required\")", errBadProxyHeader)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: incomplete after proxy_protocol_timeout %s", errBadProxyHeader, l.ProxyProtocolTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: the client closed in the middle of it", errBadProxyHeader)
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		if l.ProxyProtocol == config.ProxyProtocolRequired {
			return fmt.Errorf("%w: missing (proxy_protocol = \"required\")", errBadProxyHeader)
		}
	case err != nil:
		return fmt.Errorf("%w: %w%s", errBadProxyHeader, err, hint(err))
	case !trusted:
		return fmt.Errorf("%w: header from %s, which is not in proxy_protocol_trusted", errBadProxyHeader, in.client.Addr())
	default:
		in.version = fmt.Sprintf("v%d", hdr.Version)
		if src, dst, ok := hdr.TCPAddrs(); ok && hdr.Command.IsProxy() {
			in.client, in.dest = src.AddrPort(), dst.AddrPort()
			in.client = netip.AddrPortFrom(in.client.Addr().Unmap(), in.client.Port())
			in.dest = netip.AddrPortFrom(in.dest.Addr().Unmap(), in.dest.Port())
		}
	}
	return nil
}

// hint says, for the parser's terse refusals, what a well-formed header
// looks like.
func hint(err error) string {
	switch {
	case err == proxyproto.ErrCantReadAddressFamilyAndProtocol: // v1's, bare; v2 wraps a read error in it
		return ` (a v1 line is "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n" or "PROXY UNKNOWN\r\n", one space apart)`
	case errors.Is(err, proxyproto.ErrUnsupportedAddressFamilyAndProtocol):
		return " (a v2 header of the PROXY command names a TCP, UDP or UNIX family; family UNSPEC only with the LOCAL command)"
	case errors.Is(err, proxyproto.ErrInvalidLength):
		return fmt.Sprintf(" (a v2 header's length must fit its address family and be at most %d bytes)", proxyproto.MaxV2HeaderSize)
	}
	return ""
}

// headerNeeds says how much of b a PROXY header at its start takes, as
// far as b tells: 0 and no header when b cannot begin one, -1 when more
// bytes must come first, else the length to hand the parser (a v1 line
// up to its LF, or its longest legal length when no LF came by then; a
// v2 header's whole length).
func headerNeeds(b []byte) (n int, header bool) {
	switch {
	case len(b) >= len(v2Signature) && string(b[:len(v2Signature)]) == v2Signature:
		if len(b) < 16 {
			return -1, true
		}
		n := int(b[14])<<8 + int(b[15])
		if n > int(proxyproto.MaxV2HeaderSize) {
			return 16, true // the parser refuses it from its first 16 bytes
		}
		return 16 + n, true
	case len(b) >= 5 && string(b[:5]) == "PROXY":
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return i + 1, true
		}
		if len(b) >= maxV1Header {
			return maxV1Header, true
		}
		return -1, true
	case strings.HasPrefix("PROXY", string(b)) || strings.HasPrefix(v2Signature, string(b)):
		return -1, true
	}
	return 0, false
}

// timedOutPartway is what proxy_protocol_timeout running out after the
// client's first bytes means: a header cut short
// (os.ErrDeadlineExceeded), once it had begun (headerBegun); before
// that, with "optional", no header at all (proxyproto.ErrNoProxyProtocol):
// bytes that only could begin one (a lone CRLF, which an HTTP client may
// send before its request) go on as the client's.
func timedOutPartway(l *config.Listener, begun bool) error {
	if !begun && l.ProxyProtocol == config.ProxyProtocolOptional {
		return proxyproto.ErrNoProxyProtocol
	}
	return os.ErrDeadlineExceeded
}

// headerBegun says whether got, the client's first bytes, begin a PROXY
// header for certain: "PROXY", or a whole v2 signature.
func headerBegun(got []byte) bool {
	return len(got) >= 5 && string(got[:5]) == "PROXY" ||
		len(got) >= len(v2Signature) && string(got[:len(v2Signature)]) == v2Signature
}

// errSignaturePartway: proxy_protocol_timeout ran out while the client's
// bytes only could begin a header (readHeader).
var errSignaturePartway = fmt.Errorf("the start of a PROXY header's signature, then nothing: %w", os.ErrDeadlineExceeded)

// errSilent: the client sent nothing before proxy_protocol_timeout.
var errSilent = errors.New("nothing received")

// errClosedEmpty: the client's FIN came before any byte.
var errClosedEmpty = errors.New("closed before sending anything")

// errIntakeReset: the client reset the connection before its PROXY header
// (if any) was whole.
var errIntakeReset = errors.New("the client reset the connection before the header was whole")

// errIntakeDrained: shutdown ran out of time before the header was whole.
var errIntakeDrained = errors.New("shutdown_timeout ran out before the header was whole")

// v2Signature opens every PROXY v2 header.
const v2Signature = "\r\n\r\n\x00\r\nQUIT\n"

// readHeader waits for the client's first bytes and hands them to
// go-proxyproto only once they can be a header: bytes that cannot begin one
// (a short greeting such as "PING\r\n") are no header at once, without
// waiting for the 12 bytes the library peeks. A whole v1 line is buffered
// first: the library refuses one that did not arrive in one read, and a
// header split across segments is legal. The connection's deadline bounds
// every wait.
func readHeader(br *bufio.Reader) (*proxyproto.Header, error) {
	if _, err := br.Peek(1); err != nil {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, errSilent
		case errors.Is(err, io.EOF):
			return nil, errClosedEmpty
		}
		return nil, err
	}
	for {
		b, _ := br.Peek(br.Buffered())
		switch {
		case len(b) >= len(v2Signature) || len(b) >= 5 && string(b[:5]) == "PROXY":
			return parseHeader(br)
		case !strings.HasPrefix("PROXY", string(b)) && !strings.HasPrefix(v2Signature, string(b)):
			return nil, proxyproto.ErrNoProxyProtocol
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, errSignaturePartway
			}
			return nil, err
		}
	}
}

// parseHeader lets go-proxyproto read a header whose start is buffered:
// "PROXY" (v1), or 12 bytes or more. It reads the socket only for the
// header's own bytes, so that an error there (a reset) is the one judged.
func parseHeader(br *bufio.Reader) (*proxyproto.Header, error) {
	if sig, _ := br.Peek(5); string(sig) == "PROXY" {
		for {
			line, _ := br.Peek(br.Buffered())
			if bytes.IndexByte(line, '\n') >= 0 || len(line) >= maxV1Header {
				break
			}
			if _, err := br.Peek(len(line) + 1); err != nil {
				return nil, err
			}
		}
		return proxyproto.Read(br)
	}
	if sig, _ := br.Peek(len(v2Signature)); string(sig) != v2Signature {
		return proxyproto.Read(br)
	}
	// Take the whole v2 header first, as the loops do: a FIN inside it
	// is "closed in the middle", not the parser's "invalid length"; and
	// its CRC32C is checked over its own bytes, even where they are
	// more than br holds.
	b, err := br.Peek(16)
	need, _ := headerNeeds(b)
	var raw []byte
	from := br
	switch {
	case err != nil:
	case need <= br.Size(): // peeked, not taken: bytes of a header cut short stay the client's
		if raw, err = br.Peek(need); err == nil {
			raw = bytes.Clone(raw) // Read moves past it
		}
	default:
		raw = make([]byte, need)
		if _, err = io.ReadFull(br, raw); err == nil {
			from = bufio.NewReaderSize(bytes.NewReader(raw), len(raw))
		}
	}
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	hdr, err := proxyproto.Read(from)
	if err != nil {
		return nil, err
	}
	return hdr, checkTLVs(hdr, raw)
}

// checkTLVs refuses a v2 header whose TLV list (what follows the
// addresses within its length) does not parse, nor an SSL TLV's list of
// sub-TLVs, or whose CRC32C TLV is not 4 bytes or does not match raw,
// the header's bytes: the spec has a receiver that checks it drop the
// connection.
func checkTLVs(hdr *proxyproto.Header, raw []byte) error {
	tlvs, err := hdr.TLVs()
	if err != nil {
		return fmt.Errorf("v2 TLVs: %w", err)
	}
	for _, t := range tlvs {
		if t.Type != proxyproto.PP2_TYPE_SSL {
			continue
		}
		// Its value is a client byte, a 4-byte verify field, then
		// sub-TLVs: a list of its own, framed as the header's is.
		if len(t.Value) < 5 {
			return fmt.Errorf("v2 SSL TLV of %d bytes, shorter than its client and verify fields (5)", len(t.Value))
		}
		if _, err := proxyproto.SplitTLVs(t.Value[5:]); err != nil {
			return fmt.Errorf("v2 SSL TLV's sub-TLVs: %w", err)
		}
	}
	if len(tlvs) == 0 {
		return nil
	}
	for off := 16 + addressLen(hdr); off+3 <= len(raw); {
		n := int(binary.BigEndian.Uint16(raw[off+1:]))
		if proxyproto.PP2Type(raw[off]) == proxyproto.PP2_TYPE_CRC32C && n != 4 {
			return fmt.Errorf("v2 CRC32C TLV of %d bytes, want 4", n)
		}
		if proxyproto.PP2Type(raw[off]) == proxyproto.PP2_TYPE_CRC32C && off+7 <= len(raw) {
			sum := binary.BigEndian.Uint32(raw[off+3:])
			zeroed := bytes.Clone(raw)
			clear(zeroed[off+3 : off+7])
			if got := crc32.Checksum(zeroed, castagnoli); got != sum {
				return fmt.Errorf("v2 CRC32C TLV %08x, the header's bytes give %08x", sum, got)
			}
		}
		off += 3 + n
	}
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// addressLen is the length of a v2 header's address block.
func addressLen(hdr *proxyproto.Header) int {
	switch {
	case hdr.TransportProtocol.IsIPv4():
		return 12
	case hdr.TransportProtocol.IsIPv6():
		return 36
	case hdr.TransportProtocol.IsUnix():
		return 216
	}
	return 0
}

// maxV1Header is the longest legal v1 header line, CRLF included.
const maxV1Header = 107

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// proxyHeader builds the header sent to the backend, naming the real client.
func proxyHeader(mode config.SendProxyProtocol, in intake) *proxyproto.Header {
	version := byte(1)
	if mode == config.SendV2 {
		version = 2
	}
	src := net.TCPAddrFromAddrPort(in.client)
	dst := net.TCPAddrFromAddrPort(in.dest)
	return proxyproto.HeaderProxyFromAddrs(version, src, dst)
}

func addrPort(a net.Addr) netip.AddrPort {
	t, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := t.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

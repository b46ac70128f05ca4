package sockdiag

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// The inet_diag filter language, from linux/inet_diag.h: golang.org/x/sys/unix
// does not name it.
const (
	inetDiagReqBytecode = 1 // INET_DIAG_REQ_BYTECODE: the request attribute holding a filter
	bcJump              = 1 // INET_DIAG_BC_JMP: jump by the op's "no"
	bcSrcCond           = 7 // INET_DIAG_BC_S_COND: local address and port
	bcDstCond           = 8 // INET_DIAG_BC_D_COND: peer address and port

	sizeofOp       = 4 // struct inet_diag_bc_op {u8 code; u8 yes; u16 no}
	sizeofHostcond = 8 // struct inet_diag_hostcond {u8 family; u8 prefix_len; int port}, then the address

	// maxBytecode keeps a filter within one netlink attribute (nla_len is
	// 16 bits) and the op's 16-bit jumps.
	maxBytecode = 60000
)

// bytecode compiles f for a dump of family: an OR of one condition per
// local port (any address: AF_UNSPEC, prefix 0) and one per peer the
// family can hold (IPv4 peers also in an IPv6 dump, where the kernel
// matches them IPv4-mapped). conds counts the conditions; bc is nil when
// they do not fit in one filter.
//
// The kernel runs the ops from the start for each socket: an op whose test
// holds moves on by its "yes" (here, to the next op), one that fails by its
// "no"; a socket is kept when this ends exactly at the end of the code. A
// condition that holds reaches the JMP after it, which jumps to the end; a
// condition that fails jumps over that JMP to the next condition, or, the
// last one, four bytes past the end: rejected.
func bytecode(f *Filter, family uint8) (bc []byte, conds int) {
	var terms [][]byte
	for _, p := range f.LocalPorts {
		terms = append(terms, hostcond(bcSrcCond, unix.AF_UNSPEC, 0, nil, p))
	}
	for _, ap := range f.Peers {
		a := ap.Addr().Unmap()
		switch {
		case a.Is4():
			terms = append(terms, hostcond(bcDstCond, unix.AF_INET, 32, a.AsSlice(), ap.Port()))
		case family == unix.AF_INET6:
			terms = append(terms, hostcond(bcDstCond, unix.AF_INET6, 128, a.AsSlice(), ap.Port()))
		}
	}
	return or(terms), len(terms)
}

// hostcond is one S_COND or D_COND op: port and address prefix.
func hostcond(code uint8, family, prefix uint8, addr []byte, port uint16) []byte {
	b := make([]byte, sizeofOp+sizeofHostcond+len(addr))
	b[0] = code
	b[sizeofOp] = family
	b[sizeofOp+1] = prefix
	binary.NativeEndian.PutUint32(b[sizeofOp+4:], uint32(port))
	copy(b[sizeofOp+sizeofHostcond:], addr)
	return b
}

// or joins conditions: each moves on to a JMP to the end when it holds,
// and past that JMP when it fails (see bytecode).
func or(terms [][]byte) []byte {
	if len(terms) == 0 {
		return nil
	}
	size := -sizeofOp // no JMP after the last
	for _, t := range terms {
		size += len(t) + sizeofOp
	}
	if size > maxBytecode {
		return nil
	}
	bc := make([]byte, 0, size)
	for i, t := range terms {
		bc = append(bc, op(t[0], len(t), len(t)+sizeofOp)...)
		bc = append(bc, t[sizeofOp:]...)
		if i < len(terms)-1 {
			rest := size - len(bc) - sizeofOp // the bytes after this JMP
			bc = append(bc, op(bcJump, sizeofOp, sizeofOp+rest)...)
		}
	}
	return bc
}

// op encodes struct inet_diag_bc_op.
func op(code uint8, yes, no int) []byte {
	b := make([]byte, sizeofOp)
	b[0], b[1] = code, uint8(yes)
	binary.NativeEndian.PutUint16(b[2:], uint16(no))
	return b
}

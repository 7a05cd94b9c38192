// Package dnswire reads and patches DNS messages in wire format without
// unpacking them: it parses the header and the single question of a query,
// builds a lower-cased cache key, finds the TTL fields of a packed answer and
// rewrites IDs, flags and TTLs in place. It never allocates on the hit path.
package dnswire

import (
	"encoding/binary"
	"errors"
)

// Header field offsets and flag bits.
const (
	HeaderLen = 12

	FlagQR = 0x8000
	FlagAA = 0x0400
	FlagTC = 0x0200
	FlagRD = 0x0100
	FlagRA = 0x0080
	FlagAD = 0x0020
	FlagCD = 0x0010

	maskOpcode = 0x7800
	maskRcode  = 0x000f

	// TypeOPT is the EDNS0 pseudo record type.
	TypeOPT = 41
	// ClassINET is the Internet class.
	ClassINET = 1
	// ClassANY is the ANY class.
	ClassANY = 255

	// MinUDPSize is the size every client accepts (RFC 1035).
	MinUDPSize = 512
	// MaxNameLen is the longest domain name in wire format.
	MaxNameLen = 255
	// OPTLen is the length of an OPT record without options.
	OPTLen = 11
	// MaxKeyLen is the longest key AppendKey produces.
	MaxKeyLen = MaxNameLen + 5
)

// Errors returned by the parsers. They are sentinels so that the hit path
// does not allocate.
var (
	ErrShort       = errors.New("dnswire: message too short")
	ErrNotQuery    = errors.New("dnswire: not a query")
	ErrNotSimple   = errors.New("dnswire: not a simple query (opcode, counts or EDNS version)")
	ErrName        = errors.New("dnswire: malformed domain name")
	ErrTrailing    = errors.New("dnswire: trailing bytes after the message")
	ErrPointerLoop = errors.New("dnswire: compression pointer loop")
)

// Query is the parsed header and question of a query.
type Query struct {
	ID      uint16
	Flags   uint16
	QType   uint16
	QClass  uint16
	NameEnd int // offset just past the question name
	QEnd    int // offset just past the question (type and class)
	// EDNS reports an OPT record; UDPSize and DO come from it.
	EDNS    bool
	UDPSize uint16
	DO      bool
}

// ID returns the message ID of msg (which must be at least HeaderLen long).
func ID(msg []byte) uint16 { return binary.BigEndian.Uint16(msg) }

// Flags returns the flags word of msg's header.
func Flags(msg []byte) uint16 { return binary.BigEndian.Uint16(msg[2:]) }

// Rcode returns the 4-bit response code of a header flags word.
func Rcode(flags uint16) int { return int(flags & maskRcode) }

// Opcode returns the opcode of a header flags word.
func Opcode(flags uint16) int { return int(flags&maskOpcode) >> 11 }

// Count returns the i-th section count (0 question, 1 answer, 2 authority,
// 3 additional).
func Count(msg []byte, i int) int { return int(binary.BigEndian.Uint16(msg[4+2*i:])) }

// SetCount sets the i-th section count.
func SetCount(msg []byte, i, n int) { binary.BigEndian.PutUint16(msg[4+2*i:], uint16(n)) }

// SetID sets the message ID.
func SetID(msg []byte, id uint16) { binary.BigEndian.PutUint16(msg, id) }

// SetFlags sets the flags word.
func SetFlags(msg []byte, f uint16) { binary.BigEndian.PutUint16(msg[2:], f) }

// ParseQuery parses the header and question of a standard query with one
// question, no answer or authority records and at most one additional
// record, which must be an OPT record of EDNS version 0. Anything else
// returns an error; ErrNotSimple means the message is well formed enough to
// be handed to a full parser.
func ParseQuery(msg []byte, q *Query) error {
	if len(msg) < HeaderLen {
		return ErrShort
	}
	q.ID = binary.BigEndian.Uint16(msg)
	q.Flags = binary.BigEndian.Uint16(msg[2:])
	if q.Flags&FlagQR != 0 {
		return ErrNotQuery
	}
	if Opcode(q.Flags) != 0 || Count(msg, 0) != 1 || Count(msg, 1) != 0 || Count(msg, 2) != 0 {
		return ErrNotSimple
	}
	ar := Count(msg, 3)
	if ar > 1 {
		return ErrNotSimple
	}
	end, err := questionName(msg, HeaderLen)
	if err != nil {
		return err
	}
	if end+4 > len(msg) {
		return ErrShort
	}
	q.NameEnd = end
	q.QType = binary.BigEndian.Uint16(msg[end:])
	q.QClass = binary.BigEndian.Uint16(msg[end+2:])
	q.QEnd = end + 4
	q.EDNS, q.DO, q.UDPSize = false, false, 0
	if ar == 0 {
		if q.QEnd != len(msg) {
			return ErrTrailing
		}
		return nil
	}
	return parseOPT(msg, q)
}

// parseOPT reads the single additional record, which must be an OPT record
// owned by the root that ends the message.
func parseOPT(msg []byte, q *Query) error {
	off := q.QEnd
	if off+OPTLen > len(msg) {
		return ErrShort
	}
	if msg[off] != 0 || binary.BigEndian.Uint16(msg[off+1:]) != TypeOPT {
		return ErrNotSimple
	}
	rdlen := int(binary.BigEndian.Uint16(msg[off+9:]))
	if off+OPTLen+rdlen != len(msg) {
		if off+OPTLen+rdlen > len(msg) {
			return ErrShort
		}
		return ErrTrailing
	}
	if msg[off+6] != 0 { // EDNS version
		return ErrNotSimple
	}
	q.EDNS = true
	q.UDPSize = binary.BigEndian.Uint16(msg[off+3:])
	q.DO = msg[off+7]&0x80 != 0
	return nil
}

// questionName checks the uncompressed name starting at off and returns the
// offset just past it.
func questionName(msg []byte, off int) (int, error) {
	start := off
	for {
		if off >= len(msg) {
			return 0, ErrShort
		}
		l := int(msg[off])
		if l == 0 {
			off++
			break
		}
		if l > 63 { // compression pointers and extended labels
			return 0, ErrNotSimple
		}
		off += 1 + l
		if off-start >= MaxNameLen {
			return 0, ErrName
		}
	}
	return off, nil
}

// MaxUDPSize returns the largest UDP response the client of q accepts.
func (q *Query) MaxUDPSize() int {
	if !q.EDNS || q.UDPSize < MinUDPSize {
		return MinUDPSize
	}
	return int(q.UDPSize)
}

// AppendKey appends the cache key of q to dst: the lower-cased question name
// in wire format, type, class and a byte holding the DO, CD and RD bits (an
// answer to RD=0 is a referral or a cached-only answer, never one for an
// RD=1 client). It does
// not allocate when dst has MaxKeyLen spare capacity.
func AppendKey(dst, msg []byte, q *Query) []byte {
	for _, c := range msg[HeaderLen:q.NameEnd] {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	var bits byte
	if q.DO {
		bits |= 1
	}
	if q.Flags&FlagCD != 0 {
		bits |= 2
	}
	if q.Flags&FlagRD != 0 {
		bits |= 4
	}
	return append(dst, byte(q.QType>>8), byte(q.QType), byte(q.QClass>>8), byte(q.QClass), bits)
}

// KeyName returns the wire-format name at the start of a key made by
// AppendKey.
func KeyName(key []byte) []byte {
	if len(key) < 5 {
		return nil
	}
	return key[:len(key)-5]
}

// SkipName returns the offset just past the possibly compressed name at off.
func SkipName(msg []byte, off int) (int, error) {
	for n := 0; ; n++ {
		if off >= len(msg) {
			return 0, ErrShort
		}
		if n > MaxNameLen {
			return 0, ErrName
		}
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1, nil
		case l&0xc0 == 0xc0:
			if off+2 > len(msg) {
				return 0, ErrShort
			}
			return off + 2, nil
		case l > 63:
			return 0, ErrName
		}
		off += 1 + l
	}
}

// Layout describes a packed response: where its question ends and where
// the TTL field of each record other than OPT is.
type Layout struct {
	QEnd       int
	TTLOffsets []uint16
	// OPTStart is the offset of the (last) OPT record, -1 when there is none.
	OPTStart int
}

// Walk checks a packed message record by record and returns its layout.
func Walk(msg []byte) (Layout, error) { return WalkInto(msg, nil) }

// WalkInto is Walk that appends the TTL offsets to offs.
func WalkInto(msg []byte, offs []uint16) (Layout, error) {
	lay := Layout{OPTStart: -1, TTLOffsets: offs}
	if len(msg) < HeaderLen {
		return lay, ErrShort
	}
	if len(msg) > 0xffff {
		return lay, ErrTrailing
	}
	off := HeaderLen
	for i := Count(msg, 0); i > 0; i-- {
		end, err := SkipName(msg, off)
		if err != nil {
			return lay, err
		}
		off = end + 4
		if off > len(msg) {
			return lay, ErrShort
		}
	}
	lay.QEnd = off
	rrs := Count(msg, 1) + Count(msg, 2) + Count(msg, 3)
	for range rrs {
		start := off
		end, err := SkipName(msg, off)
		if err != nil {
			return lay, err
		}
		if end+10 > len(msg) {
			return lay, ErrShort
		}
		typ := binary.BigEndian.Uint16(msg[end:])
		rdlen := int(binary.BigEndian.Uint16(msg[end+8:]))
		if typ == TypeOPT {
			lay.OPTStart = start
		} else {
			lay.TTLOffsets = append(lay.TTLOffsets, uint16(end+4))
		}
		off = end + 10 + rdlen
		if off > len(msg) {
			return lay, ErrShort
		}
	}
	if off != len(msg) {
		return lay, ErrTrailing
	}
	return lay, nil
}

// SetTTLs writes ttl into every TTL field listed in offsets.
func SetTTLs(msg []byte, offsets []uint16, ttl uint32) {
	for _, o := range offsets {
		binary.BigEndian.PutUint32(msg[o:], ttl)
	}
}

// AppendOPT appends an OPT record without options advertising size, with
// the DO bit set when do is true. The caller increments the additional
// count of the message.
func AppendOPT(msg []byte, size uint16, do bool) []byte {
	var flags byte
	if do {
		flags = 0x80
	}
	return append(msg, 0, 0, TypeOPT, byte(size>>8), byte(size), 0, 0, flags, 0, 0, 0)
}

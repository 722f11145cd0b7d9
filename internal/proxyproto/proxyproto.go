// Package proxyproto reads and writes the binary header of PROXY protocol version 2, which a
// TCP load balancer (HAProxy `send-proxy-v2`, and others) sends at the start of a connection to
// tell the server the address of the client it accepted. Only version 2 is implemented; the
// text header of version 1 is not a valid header here.
//
// The header, as the PROXY protocol specification (section 2.2) lays it out:
//
//	offset  size  field
//	0       12    signature \r\n\r\n\0\r\nQUIT\n
//	12      1     version (high nibble, 2) and command (low nibble: 0 LOCAL, 1 PROXY)
//	13      1     address family (high nibble: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX) and
//	              transport (low nibble: 0 UNSPEC, 1 STREAM, 2 DGRAM)
//	14      2     length of the rest, big-endian
//	16      len   addresses (INET 12 bytes, INET6 36, UNIX 216), then TLVs
//
// Read consumes exactly the header and nothing after it, so that the connection's next reader
// (a TLS handshake) sees the client's first byte. Its size is bounded by MaxLen before any
// allocation.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
)

// Signature is the first 12 bytes of every version 2 header (specification section 2.2).
var Signature = [12]byte{'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'}

// fixedLen is the length of the signature, version and command, family and length fields.
const fixedLen = 16

// MaxLen is the largest header Read accepts, fixed part included: the 216-byte UNIX address
// block and room for the TLVs a balancer adds (authority, unique ID, CRC32C, ALPN). The
// specification allows up to 65,535 bytes after the fixed part; a longer header is refused
// rather than buffered, because its sender is either broken or trying to hold memory.
const MaxLen = fixedLen + 1024

// Command is the header's command (low nibble of byte 12).
type Command uint8

const (
	// Local: the connection was opened by the balancer itself (a health check); the addresses,
	// if any, are to be ignored.
	Local Command = 0x0
	// Proxy: the connection is relayed on behalf of a client whose addresses the header carries.
	Proxy Command = 0x1
)

// String returns "LOCAL", "PROXY" or the number.
func (c Command) String() string {
	switch c {
	case Local:
		return "LOCAL"
	case Proxy:
		return "PROXY"
	}
	return fmt.Sprintf("Command(%d)", uint8(c))
}

// Address families and transports (high and low nibble of byte 13).
const (
	familyUnspec = 0x0
	familyInet   = 0x1
	familyInet6  = 0x2
	familyUnix   = 0x3

	transportUnspec = 0x0
	transportStream = 0x1
	transportDgram  = 0x2
)

// addrLen is the length of the address block of each family (specification section 2.2).
var addrLen = [...]int{familyUnspec: 0, familyInet: 12, familyInet6: 36, familyUnix: 216}

// TLV types the reader looks at (specification section 2.2.7); every other type is skipped.
const (
	tlvCRC32C = 0x03
)

// Header is a decoded version 2 header.
type Header struct {
	// Command is Local or Proxy.
	Command Command
	// Source and Destination are the client's and the balancer's addresses of the relayed
	// TCP connection, IPv4-mapped IPv6 addresses unmapped. For a Local header they are the
	// zero value.
	Source, Destination netip.AddrPort
}

// ErrNoSignature is returned when the data does not start with the version 2 signature: the
// peer sent no header (or a version 1 text header).
var ErrNoSignature = errors.New("proxyproto: no PROXY protocol v2 signature")

// ErrUnsupported is wrapped by the error for a well-formed PROXY header of an address family
// or transport other than TCP over IPv4 or IPv6 (UNSPEC, UDP, UNIX sockets): it carries no
// address the server could use in place of the balancer's.
var ErrUnsupported = errors.New("proxyproto: unsupported address family or transport")

// FormatError is a header that breaks the specification.
type FormatError struct {
	Field string // "version", "command", "family", "length", "tlv", "crc32c"
	Msg   string
}

func (e *FormatError) Error() string {
	return "proxyproto: malformed header: " + e.Field + ": " + e.Msg
}

// Read reads one version 2 header from r, consuming exactly its bytes. It returns
// ErrNoSignature (with io.ErrUnexpectedEOF or io.EOF when r ended first), a *FormatError, an
// error wrapping ErrUnsupported, or the read error of r (a deadline, for instance).
func Read(r io.Reader) (Header, error) {
	var fixed [fixedLen]byte
	if n, err := io.ReadFull(r, fixed[:]); err != nil {
		if n > 0 && !bytes.HasPrefix(Signature[:], fixed[:min(n, len(Signature))]) {
			return Header{}, ErrNoSignature
		}
		return Header{}, err
	}
	n, err := checkFixed(fixed[:])
	if err != nil {
		return Header{}, err
	}
	buf := make([]byte, fixedLen+n) // n was bounded by checkFixed
	copy(buf, fixed[:])
	if _, err := io.ReadFull(r, buf[fixedLen:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, err
	}
	h, _, err := Parse(buf)
	return h, err
}

// checkFixed checks the signature, version and length of the fixed part and returns the length
// of the rest.
func checkFixed(b []byte) (int, error) {
	if !bytes.Equal(b[:len(Signature)], Signature[:]) {
		return 0, ErrNoSignature
	}
	// Section 2.2: "The highest four bits contains the version ... must always be sent as
	// \x2 and the receiver must only accept this value."
	if v := b[12] >> 4; v != 2 {
		return 0, &FormatError{Field: "version", Msg: fmt.Sprintf("%d, want 2", v)}
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	if fixedLen+n > MaxLen {
		return 0, &FormatError{Field: "length", Msg: fmt.Sprintf("%d bytes after the fixed part; at most %d are accepted", n, MaxLen-fixedLen)}
	}
	return n, nil
}

// Parse decodes the header at the start of b and returns it with its length in bytes. Bytes
// after the header are not looked at. Its errors are those of Read, with io.ErrUnexpectedEOF
// when b ends inside the header.
func Parse(b []byte) (Header, int, error) {
	if len(b) < fixedLen {
		if !bytes.HasPrefix(Signature[:], b[:min(len(b), len(Signature))]) {
			return Header{}, 0, ErrNoSignature
		}
		return Header{}, 0, io.ErrUnexpectedEOF
	}
	n, err := checkFixed(b[:fixedLen])
	if err != nil {
		return Header{}, 0, err
	}
	total := fixedLen + n
	if len(b) < total {
		return Header{}, 0, io.ErrUnexpectedEOF
	}
	b = b[:total]
	cmd := Command(b[12] & 0x0f)
	fam, tr := int(b[13]>>4), int(b[13]&0x0f)
	// Section 2.2: "Other values are unassigned and must not be emitted by senders.
	// Receivers must drop connections presenting unexpected values here."
	if cmd != Local && cmd != Proxy {
		return Header{}, 0, &FormatError{Field: "command", Msg: fmt.Sprintf("%d is neither LOCAL (0) nor PROXY (1)", cmd)}
	}
	if fam > familyUnix || tr > transportDgram {
		return Header{}, 0, &FormatError{Field: "family", Msg: fmt.Sprintf("0x%02x is not an assigned family and transport", b[13])}
	}
	if n < addrLen[fam] {
		return Header{}, 0, &FormatError{Field: "length", Msg: fmt.Sprintf("%d bytes cannot hold the %d-byte address block of family %d", n, addrLen[fam], fam)}
	}
	if err := checkTLVs(b, fixedLen+addrLen[fam]); err != nil {
		return Header{}, 0, err
	}
	h := Header{Command: cmd}
	if cmd == Local {
		// Section 2.2: for LOCAL "the receiver must accept this connection as valid and must
		// use the real connection endpoints and discard the protocol block including the
		// family which is ignored".
		return h, total, nil
	}
	a := b[fixedLen:]
	switch {
	case fam == familyInet && tr == transportStream:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
	case fam == familyInet6 && tr == transportStream:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:34]))
		h.Destination = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])).Unmap(), binary.BigEndian.Uint16(a[34:36]))
	default:
		// Section 2.2: with UNSPEC "the receiver is free to accept the connection anyway and
		// use the real connection endpoints or to reject it"; UDP and UNIX sockets are not
		// what a partner listener relays.
		return Header{}, 0, fmt.Errorf("%w: family %d, transport %d", ErrUnsupported, fam, tr)
	}
	return h, total, nil
}

// checkTLVs checks that the bytes of b from off on are a sequence of whole TLVs and, when one
// of them is a CRC32C, that it matches (section 2.2.7: the checksum is computed over the whole
// header with the checksum's own value as zeros).
func checkTLVs(b []byte, off int) error {
	crcAt := -1
	for i := off; i < len(b); {
		if len(b)-i < 3 {
			return &FormatError{Field: "tlv", Msg: fmt.Sprintf("%d bytes left at offset %d, less than a TLV's type and length", len(b)-i, i)}
		}
		typ, n := b[i], int(binary.BigEndian.Uint16(b[i+1:i+3]))
		if n > len(b)-i-3 {
			return &FormatError{Field: "tlv", Msg: fmt.Sprintf("type 0x%02x at offset %d: length %d exceeds the header", typ, i, n)}
		}
		if typ == tlvCRC32C {
			if n != 4 || crcAt >= 0 {
				return &FormatError{Field: "crc32c", Msg: "want exactly one 4-byte value"}
			}
			crcAt = i + 3
		}
		i += 3 + n
	}
	if crcAt < 0 {
		return nil
	}
	want := binary.BigEndian.Uint32(b[crcAt : crcAt+4])
	c := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	c.Write(b[:crcAt])
	c.Write([]byte{0, 0, 0, 0})
	c.Write(b[crcAt+4:])
	if got := c.Sum32(); got != want {
		return &FormatError{Field: "crc32c", Msg: fmt.Sprintf("checksum 0x%08x, computed 0x%08x", want, got)}
	}
	return nil
}

// Append appends the encoding of h to b: for a Local header the UNSPEC family without
// addresses, for a Proxy header TCP over IPv4 when both addresses are IPv4 (IPv4-mapped IPv6
// addresses count as IPv4), else TCP over IPv6. It adds no TLV.
func (h Header) Append(b []byte) []byte {
	b = append(b, Signature[:]...)
	if h.Command != Proxy {
		return append(b, 0x20|byte(Local), familyUnspec<<4|transportUnspec, 0, 0)
	}
	src, dst := h.Source.Addr().Unmap(), h.Destination.Addr().Unmap()
	if src.Is4() && dst.Is4() {
		b = append(b, 0x20|byte(Proxy), familyInet<<4|transportStream, 0, byte(addrLen[familyInet]))
		b = append(b, src.AsSlice()...)
		b = append(b, dst.AsSlice()...)
	} else {
		s16, d16 := h.Source.Addr().As16(), h.Destination.Addr().As16()
		b = append(b, 0x20|byte(Proxy), familyInet6<<4|transportStream, 0, byte(addrLen[familyInet6]))
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, h.Source.Port())
	return binary.BigEndian.AppendUint16(b, h.Destination.Port())
}

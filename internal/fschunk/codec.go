package fschunk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

var be = binary.BigEndian

// Decoding errors. Every decoder wraps one of these so callers can count
// drops by cause without string matching.
var (
	ErrShort    = errors.New("fschunk: datagram too short")
	ErrTrailing = errors.New("fschunk: trailing bytes")
	ErrVersion  = errors.New("fschunk: unsupported version")
	ErrType     = errors.New("fschunk: unexpected message type")
	ErrReserved = errors.New("fschunk: reserved field not zero")
	ErrInvalid  = errors.New("fschunk: invalid field")
	ErrPath     = errors.New("fschunk: invalid path")
	ErrTooLarge = errors.New("fschunk: message exceeds datagram size")
)

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// ParsePrefix reads the common prefix and checks version and reserved bits.
func ParsePrefix(b []byte) (Type, error) {
	if len(b) < PrefixSize {
		return 0, ErrShort
	}
	if b[0] != Version {
		return 0, fmt.Errorf("%w %d", ErrVersion, b[0])
	}
	if b[2] != 0 || b[3] != 0 {
		return 0, ErrReserved
	}
	return Type(b[1]), nil
}

func appendPrefix(b []byte, t Type) []byte {
	return append(b, Version, byte(t), 0, 0)
}

// Header is the 16-byte transport header, sent in the clear and
// authenticated as the AEAD's additional data.
type Header struct {
	Type     Type
	Receiver uint32 // the receiver's session index
	Counter  uint64 // per-direction datagram counter, the AEAD nonce
}

// AppendHeader appends a transport header. Receiver and Counter are
// usually left zero and filled in by the sealing session.
func AppendHeader(b []byte, h Header) []byte {
	b = appendPrefix(b, h.Type)
	b = be.AppendUint32(b, h.Receiver)
	return be.AppendUint64(b, h.Counter)
}

// PutHeaderIDs writes receiver index and counter into an encoded header.
func PutHeaderIDs(hdr []byte, receiver uint32, counter uint64) {
	be.PutUint32(hdr[4:8], receiver)
	be.PutUint64(hdr[8:16], counter)
}

// ParseHeader decodes a transport header. It checks the datagram is long
// enough to hold a header and a tag; the type is returned unvalidated so
// that a receiver can answer an unknown type with ERROR UNSUPPORTED once
// the datagram has been authenticated.
func ParseHeader(b []byte) (Header, error) {
	t, err := ParsePrefix(b)
	if err != nil {
		return Header{}, err
	}
	if t.IsHandshake() {
		return Header{}, fmt.Errorf("%w: %v is not a transport message", ErrType, t)
	}
	if len(b) < Overhead {
		return Header{}, ErrShort
	}
	return Header{Type: t, Receiver: be.Uint32(b[4:8]), Counter: be.Uint64(b[8:16])}, nil
}

// ---------------------------------------------------------------- handshake

// Hello opens a handshake. It is padded to HelloSize so that the gateway's
// answer (a CHALLENGE) is never larger than what an unproven sender sent.
type Hello struct {
	Sender   uint32 // the server's index for this session
	Instance uint64 // random per server process: identifies the server across rekeys
	Nonce    [NonceSize]byte
	MAC      [MACSize]byte // over bytes [0, HelloSize-MACSize)
}

// Append encodes h; the MAC field is copied as is.
func (h *Hello) Append(b []byte) []byte {
	b = appendPrefix(b, TypeHello)
	b = be.AppendUint32(b, h.Sender)
	b = be.AppendUint64(b, h.Instance)
	b = append(b, h.Nonce[:]...)
	b = append(b, make([]byte, HelloSize-MACSize-32)...)
	return append(b, h.MAC[:]...)
}

// Decode parses a HELLO; the padding must be zero.
func (h *Hello) Decode(b []byte) error {
	if err := expect(b, TypeHello, HelloSize); err != nil {
		return err
	}
	h.Sender = be.Uint32(b[4:8])
	h.Instance = be.Uint64(b[8:16])
	copy(h.Nonce[:], b[16:32])
	for _, c := range b[32 : HelloSize-MACSize] {
		if c != 0 {
			return ErrReserved
		}
	}
	copy(h.MAC[:], b[HelloSize-MACSize:])
	return nil
}

// Challenge is the gateway's stateless answer to a HELLO.
type Challenge struct {
	Receiver uint32 // the HELLO's Sender
	Cookie   [CookieSize]byte
	MAC      [MACSize]byte // over bytes [0, 40) followed by the HELLO's nonce
}

func (c *Challenge) Append(b []byte) []byte {
	b = appendPrefix(b, TypeChallenge)
	b = be.AppendUint32(b, c.Receiver)
	b = append(b, c.Cookie[:]...)
	return append(b, c.MAC[:]...)
}

func (c *Challenge) Decode(b []byte) error {
	if err := expect(b, TypeChallenge, ChallengeSize); err != nil {
		return err
	}
	c.Receiver = be.Uint32(b[4:8])
	copy(c.Cookie[:], b[8:40])
	copy(c.MAC[:], b[40:56])
	return nil
}

// Auth completes a handshake: it returns the cookie, proving the server
// can receive at its address, and carries the first Noise IKpsk2 message,
// which proves the server's static key (and the pre-shared key).
type Auth struct {
	Sender   uint32
	Instance uint64
	Nonce    [NonceSize]byte // the HELLO's nonce
	Cookie   [CookieSize]byte
	Noise    [NoiseInitSize]byte
	MAC      [MACSize]byte // over bytes [0, AuthSize-MACSize)
}

func (a *Auth) Append(b []byte) []byte {
	b = appendPrefix(b, TypeAuth)
	b = be.AppendUint32(b, a.Sender)
	b = be.AppendUint64(b, a.Instance)
	b = append(b, a.Nonce[:]...)
	b = append(b, a.Cookie[:]...)
	b = append(b, a.Noise[:]...)
	return append(b, a.MAC[:]...)
}

func (a *Auth) Decode(b []byte) error {
	if err := expect(b, TypeAuth, AuthSize); err != nil {
		return err
	}
	a.Sender = be.Uint32(b[4:8])
	a.Instance = be.Uint64(b[8:16])
	copy(a.Nonce[:], b[16:32])
	copy(a.Cookie[:], b[32:64])
	copy(a.Noise[:], b[64:64+NoiseInitSize])
	copy(a.MAC[:], b[AuthSize-MACSize:])
	return nil
}

func expect(b []byte, t Type, size int) error {
	got, err := ParsePrefix(b)
	if err != nil {
		return err
	}
	if got != t {
		return fmt.Errorf("%w: %v, want %v", ErrType, got, t)
	}
	if len(b) < size {
		return ErrShort
	}
	if len(b) > size {
		return ErrTrailing
	}
	return nil
}

// ---------------------------------------------------------------- bodies
//
// The remaining messages are transport bodies: the plaintext that follows
// the header inside the AEAD. Append appends the body only; Decode takes
// the body only (no header, no tag) and rejects trailing bytes.

// reader is a bounds-checked cursor; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.err = ErrShort
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}
func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return be.Uint16(v)
	}
	return 0
}
func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return be.Uint32(v)
	}
	return 0
}
func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return be.Uint64(v)
	}
	return 0
}

// zero consumes n reserved bytes that must be zero.
func (r *reader) zero(n int) {
	for _, c := range r.take(n) {
		if c != 0 && r.err == nil {
			r.err = ErrReserved
		}
	}
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// done returns the first error, or ErrTrailing if bytes are left.
func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		return ErrTrailing
	}
	return r.err
}

// Welcome confirms a session to the server (gateway → server).
type Welcome struct {
	GatewayIndex      uint32 // receiver index for every datagram the server sends
	GatewayBoot       uint64 // random per gateway process: a change means the gateway restarted
	HeartbeatInterval time.Duration
	MaxDatagram       uint32 // largest datagram the gateway accepts
}

// WelcomeBodySize is the sealed part of a WELCOME.
const WelcomeBodySize = 4 + 8 + 4 + 4 + 4

func (w *Welcome) Append(b []byte) []byte {
	b = be.AppendUint32(b, w.GatewayIndex)
	b = be.AppendUint64(b, w.GatewayBoot)
	b = be.AppendUint32(b, uint32(w.HeartbeatInterval/time.Millisecond))
	b = be.AppendUint32(b, w.MaxDatagram)
	return be.AppendUint32(b, 0)
}

func (w *Welcome) Decode(b []byte) error {
	r := reader{b: b}
	w.GatewayIndex = r.u32()
	w.GatewayBoot = r.u64()
	ms := r.u32()
	w.MaxDatagram = r.u32()
	r.zero(4)
	if err := r.done(); err != nil {
		return err
	}
	if ms == 0 || ms > 60_000 {
		return invalid("heartbeat interval %d ms", ms)
	}
	if w.MaxDatagram < MinDatagramSize || w.MaxDatagram > MaxDatagramSize {
		return invalid("max datagram %d", w.MaxDatagram)
	}
	w.HeartbeatInterval = time.Duration(ms) * time.Millisecond
	return nil
}

// Heartbeat tells the gateway a server is alive and how loaded it is.
type Heartbeat struct {
	Seq         uint32
	ReadsActive uint32 // reads being served now
	TxRate      uint64 // bytes per second sent over the last interval
	CatalogGen  uint64 // generation of the server's current catalog
	Files       uint32 // entries in that catalog
	// Name is the server's stable name (its -name, by default its host
	// name), the same across restarts, unlike its instance: what
	// operators, logs and metrics call it. "" if unnamed; else
	// ValidServerName holds.
	Name string
}

// heartbeatSize is the body of a HEARTBEAT without its name.
const heartbeatSize = 4 + 4 + 8 + 8 + 4 + 2 + 2

func (h *Heartbeat) Append(b []byte) []byte {
	b = be.AppendUint32(b, h.Seq)
	b = be.AppendUint32(b, h.ReadsActive)
	b = be.AppendUint64(b, h.TxRate)
	b = be.AppendUint64(b, h.CatalogGen)
	b = be.AppendUint32(b, h.Files)
	b = be.AppendUint16(b, uint16(len(h.Name)))
	b = be.AppendUint16(b, 0)
	return append(b, h.Name...)
}

func (h *Heartbeat) Decode(b []byte) error {
	r := reader{b: b}
	h.Seq = r.u32()
	h.ReadsActive = r.u32()
	h.TxRate = r.u64()
	h.CatalogGen = r.u64()
	h.Files = r.u32()
	n := int(r.u16())
	r.zero(2)
	if r.err == nil && n > MaxServerName {
		r.fail(invalid("server name of %d bytes", n))
	}
	name := r.take(n)
	h.Name = ""
	if r.err == nil && n > 0 {
		if err := ValidServerName(string(name)); err != nil {
			r.fail(err)
		}
		h.Name = string(name)
	}
	return r.done()
}

// ValidServerName checks a server name: 1 to MaxServerName bytes of
// UTF-8 without control characters or spaces, so that it is one token in a
// log line and a safe metrics label.
func ValidServerName(s string) error {
	switch {
	case s == "" || len(s) > MaxServerName:
		return invalid("server name of %d bytes (want 1 to %d)", len(s), MaxServerName)
	case !utf8.ValidString(s):
		return invalid("server name not UTF-8")
	case strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }):
		return invalid("server name %q has a space or control character", s)
	}
	return nil
}

// HeartbeatAck answers a heartbeat and tells the server which catalog
// generation the gateway holds for it, so a server whose gateway lost
// its catalog (or never got it) sends it again.
type HeartbeatAck struct {
	Seq        uint32
	CatalogGen uint64 // 0: the gateway holds no complete catalog of this server
}

const heartbeatAckSize = 4 + 4 + 8

func (h *HeartbeatAck) Append(b []byte) []byte {
	b = be.AppendUint32(b, h.Seq)
	b = be.AppendUint32(b, 0)
	return be.AppendUint64(b, h.CatalogGen)
}

func (h *HeartbeatAck) Decode(b []byte) error {
	r := reader{b: b}
	h.Seq = r.u32()
	r.zero(4)
	h.CatalogGen = r.u64()
	return r.done()
}

// GoodbyeReason says why a session ends.
type GoodbyeReason uint16

const (
	GoodbyeShutdown GoodbyeReason = 0 // the process is stopping
	GoodbyeRekeyed  GoodbyeReason = 1 // a newer session replaces this one
	GoodbyeRevoked  GoodbyeReason = 2 // the gateway no longer admits the server's key
)

// String gives the reason in words, for logs.
func (r GoodbyeReason) String() string {
	switch r {
	case GoodbyeShutdown:
		return "shutdown"
	case GoodbyeRekeyed:
		return "rekeyed"
	case GoodbyeRevoked:
		return "revoked"
	}
	return fmt.Sprintf("unknown(%d)", uint16(r))
}

// Goodbye ends a session at once, so the gateway drops the server without
// waiting for missed heartbeats.
type Goodbye struct {
	Reason GoodbyeReason
}

func (g *Goodbye) Append(b []byte) []byte {
	b = be.AppendUint16(b, uint16(g.Reason))
	return be.AppendUint16(b, 0)
}

func (g *Goodbye) Decode(b []byte) error {
	r := reader{b: b}
	g.Reason = GoodbyeReason(r.u16())
	r.zero(2)
	return r.done()
}

// Entry describes one version of one file.
type Entry struct {
	Hash    [HashSize]byte
	Size    int64
	ModTime time.Time // nanosecond precision, UTC
	Path    string    // clean relative slash path
}

// EncodedLen is the size of e in a catalog message.
func (e *Entry) EncodedLen() int { return CatalogEntryBase + len(e.Path) }

func (e *Entry) append(b []byte) []byte {
	b = append(b, e.Hash[:]...)
	b = be.AppendUint64(b, uint64(e.Size))
	var mtime int64
	if !e.ModTime.IsZero() {
		mtime = e.ModTime.UnixNano()
	}
	b = be.AppendUint64(b, uint64(mtime))
	b = be.AppendUint16(b, uint16(len(e.Path)))
	return append(b, e.Path...)
}

func (e *Entry) decode(r *reader) {
	copy(e.Hash[:], r.take(HashSize))
	size := r.u64()
	mtime := int64(r.u64())
	n := int(r.u16())
	p := r.take(n)
	if r.err != nil {
		return
	}
	if size > MaxFileSize {
		r.fail(invalid("size %d above %d", size, uint64(MaxFileSize)))
		return
	}
	e.Size = int64(size)
	e.ModTime = time.Unix(0, mtime).UTC()
	e.Path = string(p)
	if err := ValidPath(e.Path); err != nil {
		r.fail(err)
	}
}

// ValidPath checks that p is a clean relative slash path: not empty, at
// most MaxPathLen bytes, valid UTF-8 without control characters or
// backslashes, no leading slash, and no "", "." or ".." elements. A server
// never announces, and a gateway never accepts, anything else.
func ValidPath(p string) error {
	if p == "" || len(p) > MaxPathLen {
		return fmt.Errorf("%w: length %d", ErrPath, len(p))
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("%w: not UTF-8", ErrPath)
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return fmt.Errorf("%w: %q", ErrPath, p)
		}
	}
	if p[0] == '/' || path.Clean(p) != p || p == "." || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("%w: %q", ErrPath, p)
	}
	return nil
}

// CatalogPage is one page of a server's full catalog for a generation.
// The gateway swaps in the new catalog once it holds every page.
type CatalogPage struct {
	Gen     uint64
	Page    uint32 // 0-based
	Pages   uint32 // ≥ 1
	Entries []Entry
}

// CatalogPageHeaderSize is the body of a page before its entries.
const CatalogPageHeaderSize = 8 + 4 + 4 + 2 + 2

func (c *CatalogPage) Append(b []byte) []byte {
	b = be.AppendUint64(b, c.Gen)
	b = be.AppendUint32(b, c.Page)
	b = be.AppendUint32(b, c.Pages)
	b = be.AppendUint16(b, uint16(len(c.Entries)))
	b = be.AppendUint16(b, 0)
	for i := range c.Entries {
		b = c.Entries[i].append(b)
	}
	return b
}

func (c *CatalogPage) Decode(b []byte) error {
	r := reader{b: b}
	c.Gen = r.u64()
	c.Page = r.u32()
	c.Pages = r.u32()
	n := int(r.u16())
	r.zero(2)
	if r.err == nil && (c.Gen == 0 || c.Pages == 0 || c.Page >= c.Pages) {
		r.fail(invalid("page %d of %d, generation %d", c.Page, c.Pages, c.Gen))
	}
	if r.err == nil && n*CatalogEntryBase > len(r.b) {
		r.fail(ErrShort)
	}
	c.Entries = decodeEntries(&r, c.Entries[:0], n, false, nil)
	return r.done()
}

// CatalogDelta is one page of the changes from generation Base to Gen.
// Removed entries carry only a path (hash, size and time zero).
type CatalogDelta struct {
	Base    uint64
	Gen     uint64
	Page    uint32
	Pages   uint32
	Entries []Entry
	Removed []bool // parallel to Entries
}

// CatalogDeltaHeaderSize is the body of a delta before its entries; each
// entry costs one more byte (its operation) than in a page.
const CatalogDeltaHeaderSize = 8 + CatalogPageHeaderSize

const (
	opPut    = 1
	opRemove = 2
)

func (c *CatalogDelta) Append(b []byte) []byte {
	b = be.AppendUint64(b, c.Base)
	b = be.AppendUint64(b, c.Gen)
	b = be.AppendUint32(b, c.Page)
	b = be.AppendUint32(b, c.Pages)
	b = be.AppendUint16(b, uint16(len(c.Entries)))
	b = be.AppendUint16(b, 0)
	for i := range c.Entries {
		if c.Removed[i] {
			b = append(b, opRemove)
			e := Entry{Path: c.Entries[i].Path}
			b = e.append(b)
			continue
		}
		b = append(b, opPut)
		b = c.Entries[i].append(b)
	}
	return b
}

func (c *CatalogDelta) Decode(b []byte) error {
	r := reader{b: b}
	c.Base = r.u64()
	c.Gen = r.u64()
	c.Page = r.u32()
	c.Pages = r.u32()
	n := int(r.u16())
	r.zero(2)
	if r.err == nil && (c.Base == 0 || c.Gen <= c.Base || c.Pages == 0 || c.Page >= c.Pages) {
		r.fail(invalid("delta %d→%d page %d of %d", c.Base, c.Gen, c.Page, c.Pages))
	}
	if r.err == nil && n*(CatalogEntryBase+1) > len(r.b) {
		r.fail(ErrShort)
	}
	c.Removed = c.Removed[:0]
	c.Entries = decodeEntries(&r, c.Entries[:0], n, true, &c.Removed)
	return r.done()
}

func decodeEntries(r *reader, dst []Entry, n int, withOp bool, removed *[]bool) []Entry {
	for i := 0; i < n && r.err == nil; i++ {
		rm := false
		if withOp {
			switch r.u8() {
			case opPut:
			case opRemove:
				rm = true
			default:
				r.fail(invalid("catalog operation"))
				return dst
			}
		}
		var e Entry
		e.decode(r)
		if rm && (e.Hash != [HashSize]byte{} || e.Size != 0 || e.ModTime.UnixNano() != 0) {
			r.fail(ErrReserved)
		}
		dst = append(dst, e)
		if withOp {
			*removed = append(*removed, rm)
		}
	}
	return dst
}

// CatalogStatus is the gateway's verdict on a catalog message.
type CatalogStatus uint8

const (
	CatalogOK     CatalogStatus = 0 // page stored
	CatalogResync CatalogStatus = 1 // the delta's base is not what the gateway holds: send a full catalog
)

// CatalogAck acknowledges one page of a catalog or delta.
type CatalogAck struct {
	Gen    uint64
	Page   uint32
	Status CatalogStatus
}

func (c *CatalogAck) Append(b []byte) []byte {
	b = be.AppendUint64(b, c.Gen)
	b = be.AppendUint32(b, c.Page)
	return append(b, byte(c.Status), 0, 0, 0)
}

func (c *CatalogAck) Decode(b []byte) error {
	r := reader{b: b}
	c.Gen = r.u64()
	c.Page = r.u32()
	c.Status = CatalogStatus(r.u8())
	r.zero(3)
	if r.err == nil && c.Status > CatalogResync {
		r.fail(invalid("catalog status %d", c.Status))
	}
	return r.done()
}

// MetaRequest asks a server for the current version of a path.
type MetaRequest struct {
	ID   uint32
	Path string
}

func (m *MetaRequest) Append(b []byte) []byte {
	b = be.AppendUint32(b, m.ID)
	b = be.AppendUint16(b, uint16(len(m.Path)))
	b = be.AppendUint16(b, 0)
	return append(b, m.Path...)
}

func (m *MetaRequest) Decode(b []byte) error {
	r := reader{b: b}
	m.ID = r.u32()
	n := int(r.u16())
	r.zero(2)
	m.Path = string(r.take(n))
	if r.err == nil {
		if err := ValidPath(m.Path); err != nil {
			r.fail(err)
		}
	}
	return r.done()
}

// Meta answers a MetaRequest (or ERROR NOT_FOUND).
type Meta struct {
	ID    uint32
	Entry Entry
}

func (m *Meta) Append(b []byte) []byte {
	b = be.AppendUint32(b, m.ID)
	return m.Entry.append(b)
}

func (m *Meta) Decode(b []byte) error {
	r := reader{b: b}
	m.ID = r.u32()
	m.Entry.decode(&r)
	return r.done()
}

// Range is a byte range of a file.
type Range struct {
	Offset int64
	Length uint32
}

// Read asks a server for byte ranges of the file whose content hash is
// Hash. It is self-contained and idempotent: any holder may answer it,
// and asking again is how lost data is recovered.
type Read struct {
	ID          uint32 // chosen by the gateway, echoed in DATA and ERROR
	Hash        [HashSize]byte
	MaxDatagram uint16 // largest DATA datagram the gateway wants, in bytes
	// Pace is the rate, in KiB/s, at which the gateway asks the server to
	// send its DATA (all READs of the session together): what the
	// gateway estimates the path carries. 0: as fast as it can.
	Pace   uint32
	Ranges []Range
}

const readBase = 4 + HashSize + 2 + 4 + 2

// ReadSize is the body size of a READ with n ranges.
func ReadSize(n int) int { return readBase + 12*n }

func (m *Read) Append(b []byte) []byte {
	b = be.AppendUint32(b, m.ID)
	b = append(b, m.Hash[:]...)
	b = be.AppendUint16(b, m.MaxDatagram)
	b = be.AppendUint32(b, m.Pace)
	b = be.AppendUint16(b, uint16(len(m.Ranges)))
	for _, rg := range m.Ranges {
		b = be.AppendUint64(b, uint64(rg.Offset))
		b = be.AppendUint32(b, rg.Length)
	}
	return b
}

// Decode parses a READ, reusing m.Ranges' storage.
func (m *Read) Decode(b []byte) error {
	r := reader{b: b}
	m.ID = r.u32()
	copy(m.Hash[:], r.take(HashSize))
	m.MaxDatagram = r.u16()
	m.Pace = r.u32()
	n := int(r.u16())
	if r.err == nil && (n == 0 || n > MaxReadRanges) {
		r.fail(invalid("%d ranges", n))
	}
	if r.err == nil && (m.MaxDatagram < MinDatagramSize || int(m.MaxDatagram) > MaxDatagramSize) {
		r.fail(invalid("max datagram %d", m.MaxDatagram))
	}
	m.Ranges = m.Ranges[:0]
	for i := 0; i < n && r.err == nil; i++ {
		off := r.u64()
		l := r.u32()
		if r.err == nil && (off > MaxFileSize || l == 0 || l > MaxReadLength || off+uint64(l) > MaxFileSize) {
			r.fail(invalid("range %d+%d", off, l))
		}
		m.Ranges = append(m.Ranges, Range{Offset: int64(off), Length: l})
	}
	return r.done()
}

// Data carries file bytes at an offset. Decoding aliases Payload into the
// datagram: no allocation on the hot path.
type Data struct {
	ID      uint32
	Offset  int64
	Payload []byte
}

// AppendDataHeader appends the DATA body header; the caller appends the
// payload after it (typically by reading the file straight into the
// datagram buffer).
func AppendDataHeader(b []byte, id uint32, off int64) []byte {
	b = be.AppendUint32(b, id)
	return be.AppendUint64(b, uint64(off))
}

func (d *Data) Append(b []byte) []byte {
	return append(AppendDataHeader(b, d.ID, d.Offset), d.Payload...)
}

func (d *Data) Decode(b []byte) error {
	if len(b) < DataHeaderSize+1 {
		return ErrShort
	}
	off := be.Uint64(b[4:12])
	if off > MaxFileSize || off+uint64(len(b)-DataHeaderSize) > MaxFileSize {
		return invalid("offset %d", off)
	}
	d.ID = be.Uint32(b[0:4])
	d.Offset = int64(off)
	d.Payload = b[DataHeaderSize:]
	return nil
}

// Code is an ERROR's cause.
type Code uint16

// Error codes. A receiver treats an unknown code like CodeInternal.
const (
	CodeNotFound    Code = 1 // no file with that hash (or path)
	CodeStale       Code = 2 // the file changed: it no longer has that hash
	CodeRange       Code = 3 // a range lies beyond the end of the file
	CodeBusy        Code = 4 // overloaded: ask another holder or later
	CodeInternal    Code = 5 // I/O or other local failure
	CodeUnsupported Code = 6 // unknown message type
	CodeForbidden   Code = 7 // refused by policy (e.g. outside the root)
	CodeTooLarge    Code = 8 // the request exceeds the server's limits
)

func (c Code) String() string {
	switch c {
	case CodeNotFound:
		return "NOT_FOUND"
	case CodeStale:
		return "STALE"
	case CodeRange:
		return "RANGE"
	case CodeBusy:
		return "BUSY"
	case CodeInternal:
		return "INTERNAL"
	case CodeUnsupported:
		return "UNSUPPORTED"
	case CodeForbidden:
		return "FORBIDDEN"
	case CodeTooLarge:
		return "TOO_LARGE"
	}
	return fmt.Sprintf("CODE_%d", uint16(c))
}

// Error reports a failed request.
type Error struct {
	ID      uint32 // the request's ID (0 when not about a request)
	Code    Code
	Message string // human-readable, at most MaxErrorMessage bytes
}

func (e *Error) Error() string {
	return fmt.Sprintf("fschunk error %v (request %d): %s", e.Code, e.ID, e.Message)
}

func (e *Error) Append(b []byte) []byte {
	msg := e.Message
	if len(msg) > MaxErrorMessage {
		msg = strings.ToValidUTF8(msg[:MaxErrorMessage], "")
	}
	b = be.AppendUint32(b, e.ID)
	b = be.AppendUint16(b, uint16(e.Code))
	b = be.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

func (e *Error) Decode(b []byte) error {
	r := reader{b: b}
	e.ID = r.u32()
	e.Code = Code(r.u16())
	n := int(r.u16())
	if r.err == nil && n > MaxErrorMessage {
		r.fail(invalid("message of %d bytes", n))
	}
	msg := r.take(n)
	if r.err == nil && !utf8.Valid(msg) {
		r.fail(invalid("message not UTF-8"))
	}
	if r.err == nil && e.Code == 0 {
		r.fail(invalid("code 0"))
	}
	e.Message = string(msg)
	return r.done()
}

// SplitPages cuts entries into pages whose bodies fit in budget bytes,
// where each page costs header bytes and each entry its encoded length
// plus extra (1 for a delta's operation byte). It keeps the order and
// returns at least one (possibly empty) page, so an empty catalog is still
// announced. An entry that cannot fit any page is an error: paths are
// bounded by MaxPathLen so this only happens with a tiny budget.
func SplitPages(entries []Entry, budget, header, extra int) ([][]Entry, error) {
	pages := [][]Entry{}
	start, used := 0, header
	for i := range entries {
		n := entries[i].EncodedLen() + extra
		if header+n > budget {
			return nil, fmt.Errorf("%w: entry %q needs %d bytes, page budget %d", ErrTooLarge, entries[i].Path, header+n, budget)
		}
		if used+n > budget || i-start == math.MaxUint16 {
			pages = append(pages, entries[start:i])
			start, used = i, header
		}
		used += n
	}
	return append(pages, entries[start:]), nil
}

// HashRequest asks a server for an aligned block of nodes of one level of
// the hash tree of the version whose content hash is Hash (gateway →
// server). Like a READ it is idempotent and any holder may answer it.
type HashRequest struct {
	ID    uint32 // chosen by the gateway, echoed in HASHES and ERROR
	Hash  [HashSize]byte
	Level uint8  // 0 = leaves; at most MaxTreeLevel
	Count uint8  // nodes wanted, 1 … TreeBlockNodes
	Index uint64 // first node, a multiple of TreeBlockNodes
}

// HashRequestSize is the body size of a HASH_REQUEST.
const HashRequestSize = 4 + HashSize + 1 + 1 + 2 + 8

func (m *HashRequest) Append(b []byte) []byte {
	b = be.AppendUint32(b, m.ID)
	b = append(b, m.Hash[:]...)
	b = append(b, m.Level, m.Count, 0, 0)
	return be.AppendUint64(b, m.Index)
}

func (m *HashRequest) Decode(b []byte) error {
	r := reader{b: b}
	m.ID = r.u32()
	copy(m.Hash[:], r.take(HashSize))
	m.Level = r.u8()
	m.Count = r.u8()
	r.zero(2)
	m.Index = r.u64()
	if r.err == nil {
		r.fail(checkTreeBlock(m.Level, m.Count, m.Index))
	}
	return r.done()
}

// checkTreeBlock checks the bounds shared by HASH_REQUEST and HASHES.
func checkTreeBlock(level, count uint8, index uint64) error {
	switch {
	case level > MaxTreeLevel:
		return invalid("tree level %d", level)
	case count == 0 || count > TreeBlockNodes:
		return invalid("%d tree nodes", count)
	case index%TreeBlockNodes != 0 || index >= 1<<(MaxTreeLevel-int(level)):
		return invalid("tree index %d at level %d", index, level)
	}
	return nil
}

// Hashes answers a HashRequest with the nodes asked for (server →
// gateway); a block at the end of a level is shorter. Decoding aliases
// Nodes into the datagram.
type Hashes struct {
	ID    uint32
	Level uint8
	Index uint64
	Nodes []byte // Count × HashSize bytes
}

// HashesBase is the body size of a HASHES before its nodes.
const HashesBase = 4 + 1 + 1 + 2 + 8

func (m *Hashes) Append(b []byte) []byte {
	b = be.AppendUint32(b, m.ID)
	b = append(b, m.Level, uint8(len(m.Nodes)/HashSize), 0, 0)
	b = be.AppendUint64(b, m.Index)
	return append(b, m.Nodes...)
}

func (m *Hashes) Decode(b []byte) error {
	r := reader{b: b}
	m.ID = r.u32()
	m.Level = r.u8()
	n := r.u8()
	r.zero(2)
	m.Index = r.u64()
	if r.err == nil {
		r.fail(checkTreeBlock(m.Level, n, m.Index))
	}
	m.Nodes = r.take(int(n) * HashSize)
	return r.done()
}

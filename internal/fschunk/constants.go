// Package fschunk is the wire format of the FS Chunk Protocol v3, the UDP
// protocol between HttpGw and FastFileSrv: every constant of the
// specification (docs/PROTOCOL.md) and the one encoder and strict decoder
// of every message. It does no I/O and no cryptography: package auth seals
// and opens the bytes laid out here.
package fschunk

import "time"

// Version is the protocol version carried in the first byte of every
// datagram. Version 3 replaced the pre-shared-key handshake by Noise
// IKpsk2 (a static X25519 key pair per server and gateway, ephemeral keys
// in every handshake) and changed the content hash (a BLAKE3 tree,
// §5.17); version 2 had changed the handshake (a gateway random in
// WELCOME, cookies on a monotonic clock) and bounded sizes by
// MaxFileSize. A datagram of another version is dropped, and logged
// (rate-limited) with both versions named.
const Version = 3

// Type is the message type, the second byte of every datagram.
type Type uint8

// Handshake messages: not sealed by a session; the only messages a sender
// without a session may send. HELLO and CHALLENGE carry a MAC keyed by the
// pre-shared key and the gateway's public key; AUTH carries the first
// Noise message, WELCOME (a transport message) the second.
const (
	TypeHello     Type = 0x01 // server → gateway: fresh nonce, padded
	TypeChallenge Type = 0x02 // gateway → server: stateless cookie
	TypeAuth      Type = 0x03 // server → gateway: cookie + Noise IKpsk2 message 1
)

// Transport messages: sealed with a session's AEAD key.
const (
	TypeWelcome      Type = 0x10 // gateway → server: session established
	TypeHeartbeat    Type = 0x11 // server → gateway: liveness and load
	TypeHeartbeatAck Type = 0x12 // gateway → server
	TypeGoodbye      Type = 0x13 // either way: the session ends now

	TypeCatalogPage  Type = 0x20 // server → gateway: one page of a full catalog
	TypeCatalogDelta Type = 0x21 // server → gateway: one page of changes
	TypeCatalogAck   Type = 0x22 // gateway → server

	TypeMetaRequest Type = 0x30 // gateway → server: metadata of a path
	TypeMeta        Type = 0x31 // server → gateway

	TypeRead  Type = 0x40 // gateway → server: byte ranges of a content hash
	TypeData  Type = 0x41 // server → gateway: bytes at an offset
	TypeError Type = 0x42 // either way: a request failed

	TypeHashRequest Type = 0x43 // gateway → server: nodes of a version's hash tree
	TypeHashes      Type = 0x44 // server → gateway: those nodes
)

// IsHandshake reports whether t is authenticated by the pre-shared key
// rather than by a session.
func (t Type) IsHandshake() bool { return t >= TypeHello && t <= TypeAuth }

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "HELLO"
	case TypeChallenge:
		return "CHALLENGE"
	case TypeAuth:
		return "AUTH"
	case TypeWelcome:
		return "WELCOME"
	case TypeHeartbeat:
		return "HEARTBEAT"
	case TypeHeartbeatAck:
		return "HEARTBEAT_ACK"
	case TypeGoodbye:
		return "GOODBYE"
	case TypeCatalogPage:
		return "CATALOG_PAGE"
	case TypeCatalogDelta:
		return "CATALOG_DELTA"
	case TypeCatalogAck:
		return "CATALOG_ACK"
	case TypeMetaRequest:
		return "META_REQUEST"
	case TypeMeta:
		return "META"
	case TypeRead:
		return "READ"
	case TypeData:
		return "DATA"
	case TypeError:
		return "ERROR"
	case TypeHashRequest:
		return "HASH_REQUEST"
	case TypeHashes:
		return "HASHES"
	}
	return "UNKNOWN"
}

// Sizes in bytes.
const (
	PrefixSize = 4  // version, type, 2 reserved bytes: common to all datagrams
	HeaderSize = 16 // transport header: prefix, receiver index, counter
	TagSize    = 16 // AEAD tag after every transport datagram
	Overhead   = HeaderSize + TagSize
	MACSize    = 16 // truncated HMAC-SHA256 of handshake messages
	NonceSize  = 16 // handshake nonce
	CookieSize = 32 // 8-byte timestamp + 24-byte MAC
	// PublicKeySize is an X25519 public key: a server's or the gateway's
	// static key, or an ephemeral key of a handshake.
	PublicKeySize = 32
	// NoiseInitSize is Noise IKpsk2's first message (server → gateway, in
	// AUTH) with an empty payload: the server's ephemeral key, its static
	// key encrypted (+ tag) and the empty payload's tag.
	NoiseInitSize = PublicKeySize + PublicKeySize + TagSize + TagSize
	// NoiseResponseSize is Noise IKpsk2's second message (gateway →
	// server, in WELCOME) with an empty payload: the gateway's ephemeral
	// key and the empty payload's tag.
	NoiseResponseSize = PublicKeySize + TagSize
	HashSize          = 32 // content hash: a BLAKE3 tree root (§5.17)
	HelloSize         = 128
	ChallengeSize     = 56
	AuthSize          = 64 + NoiseInitSize + MACSize
	// WelcomeSize is a WELCOME datagram: header, the Noise response (in
	// the clear: the server needs it to derive the keys; authenticated
	// with the header), the sealed body and the tag.
	WelcomeSize = HeaderSize + NoiseResponseSize + WelcomeBodySize + TagSize

	// DataHeaderSize is the plaintext header of a DATA body: request id, offset.
	DataHeaderSize = 12
	// DataOverhead is what a DATA datagram spends on anything but file bytes.
	DataOverhead = Overhead + DataHeaderSize

	// DefaultDatagramSize fits one IPv6 packet on a 1500-byte Ethernet MTU
	// (1500 − 40 IPv6 − 8 UDP), so by default nothing is ever fragmented.
	DefaultDatagramSize = 1452
	// IPv4DatagramSize is the same for an IPv4 path (1500 − 20 − 8), which
	// the gateway uses for servers it hears over IPv4.
	IPv4DatagramSize = 1472
	// MinDatagramSize is the smallest datagram size a peer may ask for: the
	// IPv6 minimum MTU less headers.
	MinDatagramSize = 1232
	// MaxDatagramSize is the largest UDP payload over IPv4.
	MaxDatagramSize = 65507
	// LoopbackDatagramSize is used when both ends are on one host, where the
	// MTU is 64 KiB and fewer, larger datagrams cost fewer system calls.
	LoopbackDatagramSize = 32 * 1024

	MaxPathLen       = 1024    // bytes of a relative path
	MaxServerName    = 64      // bytes of a server's name (HEARTBEAT)
	MaxErrorMessage  = 256     // bytes of an ERROR's text
	MaxReadRanges    = 32      // ranges in one READ
	MaxReadLength    = 4 << 20 // bytes of one range
	CatalogEntryBase = HashSize + 8 + 8 + 2

	// MaxFileSize bounds every size and offset on the wire: 2⁴⁸ bytes
	// (256 TiB), far above any file a server shares, and far enough below
	// 2⁶³ that offset + length, chunk index × chunk size and window
	// arithmetic can never overflow an int64. A catalog entry announcing
	// more is refused by the decoder, like a bad path; a server leaves
	// such a file out of its catalog.
	MaxFileSize = 1 << 48
)

// The content hash tree (docs/PROTOCOL.md §5.17). A version's content hash
// is the root of a binary BLAKE3 tree over its leaves, so every leaf can
// be checked on its own as it streams, and the root also commits to the
// size.
const (
	// TreeLeafSize is the bytes under one leaf hash: the unit the gateway
	// verifies (and so fetches whole). 64 KiB keeps the hashes at 0.05%
	// of the content and a one-byte range read at one leaf.
	TreeLeafSize = 64 << 10
	// TreeBlockLevels: a HASHES message carries an aligned block of up to
	// 2^TreeBlockLevels nodes of one level, which hash up to one node
	// TreeBlockLevels levels higher.
	TreeBlockLevels = 5
	TreeBlockNodes  = 1 << TreeBlockLevels
	// MaxTreeLevel is the height of the tree of the largest file
	// (2^63 − 1 bytes: 2^47 leaves).
	MaxTreeLevel = 47
)

// Timers of the specification.
const (
	HeartbeatInterval = time.Second
	// EvictAfter is how long a gateway keeps a server that sends nothing:
	// three missed heartbeats.
	EvictAfter = 3 * HeartbeatInterval
	// HeartbeatAckTimeout: a server that heard no acknowledgement of its
	// heartbeats for this long assumes the gateway forgot it and
	// handshakes again (gateway restart).
	HeartbeatAckTimeout = HeartbeatInterval + HeartbeatInterval/2

	HandshakeRetryMin = 200 * time.Millisecond
	HandshakeRetryMax = 5 * time.Second

	// CookieLifetime bounds how old a CHALLENGE may be when its AUTH arrives.
	CookieLifetime = 10 * time.Second
	// CookieRotation is how often the gateway draws a new cookie secret.
	CookieRotation = 2 * time.Minute

	RekeyAfterTime  = 2 * time.Minute
	RejectAfterTime = 3 * time.Minute
	// RekeyAfterMessages and RejectAfterMessages bound the datagrams sealed
	// under one key, far below where a 64-bit counter or AES-GCM's limits
	// would matter.
	RekeyAfterMessages  = 1 << 40
	RejectAfterMessages = 1 << 41

	// Retransmission timers of the gateway's reads (RFC 6298 shape with LAN
	// floors). The initial RTO, before the first RTT sample, is RFC 6298's
	// 1 s: a shorter one times out the first READs of every path longer
	// than it (a 200 ms RTT took three RTTs to its first byte with 100 ms).
	InitialRTO = time.Second
	MinRTO     = 5 * time.Millisecond
	MaxRTO     = 2 * time.Second

	// InitialHashWait is how long the gateway waits for the answer to a
	// HASH_REQUEST sent to a server it has no RTT sample of yet, doubling
	// per try of the same block (at most 8×). Twice InitialRTO would stall
	// a response 2 s on one lost request at the start of every download;
	// a HASH_REQUEST and its answer are small, so asking again early costs
	// little, and the backoff keeps a path longer than the wait from
	// timing out forever.
	InitialHashWait = 250 * time.Millisecond

	CatalogRetry = 250 * time.Millisecond
)

package snapshot

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

const (
	// Magic opens every snapshot file.
	Magic = "RCNFSNAP"

	// FormatVersion is the only format version this package reads and
	// writes.
	FormatVersion = 1

	// MaxNameLen is the longest permitted section name, in bytes.
	MaxNameLen = 64

	// MaxSections is the largest number of sections a file may hold. The
	// limit bounds the memory a reader spends remembering section names.
	MaxSections = 1024

	// MaxChunkSize is the largest chunk a reader accepts. It bounds how
	// much a corrupt length field can make a reader expect, not how much
	// it buffers: chunk data is streamed straight to the caller.
	MaxChunkSize = 1 << 20
)

const (
	headerLen      = 32
	headerCRCStart = 28 // the header CRC covers header[:headerCRCStart]

	tagSection = 'S'
	tagEnd     = 'E'

	// writeChunkSize is the chunk size the Writer produces. Readers accept
	// any chunk size up to MaxChunkSize, so it may change without a format
	// version bump.
	writeChunkSize = 64 << 10

	chunkLenLen       = 4
	sectionTrailerLen = 12 // u64 data length + u32 CRC32C
	endRecordLen      = 5  // tag + u32 section count
	sumLen            = 32 // SHA-256
)

// Errors reported by the Reader. They are always wrapped with context; test
// for them with [errors.Is].
var (
	// ErrBadMagic means the input is not a snapshot at all.
	ErrBadMagic = errors.New("not a snapshot file (bad magic)")

	// ErrUnsupportedVersion means the input is a snapshot in a format
	// version this package does not understand.
	ErrUnsupportedVersion = errors.New("unsupported snapshot format version")

	// ErrCorrupt means the input is damaged: a checksum, length or
	// structural check failed.
	ErrCorrupt = errors.New("corrupt snapshot")

	// ErrTruncated means the input ended before the snapshot did.
	ErrTruncated = errors.New("truncated snapshot")
)

// Header is the metadata stored at the start of a snapshot: the Raft log
// position the snapshotted state corresponds to.
type Header struct {
	Index uint64
	Term  uint64
}

// castagnoli returns the CRC32C table. crc32 caches it, so this is cheap
// and keeps the package free of package-level variables.
func castagnoli() *crc32.Table {
	return crc32.MakeTable(crc32.Castagnoli)
}

// putHeader encodes h into b, which must be headerLen bytes long.
func putHeader(b []byte, h Header) {
	copy(b[0:8], Magic)
	binary.BigEndian.PutUint16(b[8:10], FormatVersion)
	binary.BigEndian.PutUint16(b[10:12], 0) // flags
	binary.BigEndian.PutUint64(b[12:20], h.Index)
	binary.BigEndian.PutUint64(b[20:28], h.Term)
	binary.BigEndian.PutUint32(b[28:32], crc32.Checksum(b[:headerCRCStart], castagnoli()))
}

// validName reports whether name may be used as a section name. The
// restricted alphabet keeps names safe to print, log and use in file names.
func validName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Checksummed entries (log entry format 2).
//
// Format 1 entries carry no checksum: a byte flipped on one replica's disk
// inside a command's payload decodes as a different, valid command, and that
// replica silently diverges. Format 2 puts a CRC32C of the rest of the entry
// right after the format byte:
//
//	entry (format 2) = format(u8 = 2) crc32c(u32, big endian) count(uvarint) command*
//
// The CRC covers every byte after it (the count and the commands, framed as
// in format 1). DecodeEntry checks it before reading anything else, so a
// damaged entry is refused as a whole (ErrChecksum) and no command of it is
// applied. Format 1 entries, written by earlier releases, still decode as
// before: the data dirs of an upgraded node keep working, without the check
// for those old entries. A leader writes format 2 only once every member of
// the configuration advertises that it reads it (the version gate); until
// then it writes format 1 (JoinEntryFormat).
const (
	// EntryFormatUnchecked is format 1: no checksum. Still read; written
	// only while some member cannot read format 2.
	EntryFormatUnchecked = 1
	// EntryFormatChecked is format 2: format 1 plus a CRC32C.
	EntryFormatChecked = 2
)

// ErrChecksum is returned (wrapped, and wrapping ErrMalformedEntry) when an
// entry's CRC32C does not match its contents: the bytes changed after the
// leader wrote them (disk, memory or a bug on the way).
var ErrChecksum = fmt.Errorf("%w: checksum mismatch", ErrMalformedEntry)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const checksumLen = 4

// verifyChecksum checks a format 2 entry and returns what follows the CRC.
func verifyChecksum(data []byte) ([]byte, error) {
	if len(data) < 1+checksumLen {
		return nil, fmt.Errorf("%w: entry of %d bytes is shorter than its format and checksum", ErrMalformedEntry, len(data))
	}
	want := binary.BigEndian.Uint32(data[1 : 1+checksumLen])
	rest := data[1+checksumLen:]
	if got := crc32.Checksum(rest, castagnoli); got != want {
		return nil, fmt.Errorf("%w: crc32c of %d bytes is %08x, the entry says %08x", ErrChecksum, len(rest), got, want)
	}
	return rest, nil
}

// JoinEntryFormat builds one log entry in the given format (1 or 2) from
// encoded commands. Any other format panics: it is a programming error, not
// input.
func JoinEntryFormat(format int, cmds []EncodedCommand) []byte {
	switch format {
	case EntryFormatUnchecked:
		return joinEntry(EntryFormatUnchecked, cmds)
	case EntryFormatChecked:
		return joinEntry(EntryFormatChecked, cmds)
	}
	panic(fmt.Sprintf("fsm: JoinEntryFormat: no entry format %d", format))
}

func joinEntry(format uint8, cmds []EncodedCommand) []byte {
	n := 1 + checksumLen + 10
	for _, c := range cmds {
		n += len(c)
	}
	e := encoder{buf: make([]byte, 0, n)}
	e.u8(format)
	if format == EntryFormatChecked {
		e.buf = append(e.buf, 0, 0, 0, 0) // the CRC, filled in below
	}
	e.uvarint(uint64(len(cmds)))
	for _, c := range cmds {
		e.buf = append(e.buf, c...)
	}
	if format == EntryFormatChecked {
		binary.BigEndian.PutUint32(e.buf[1:1+checksumLen], crc32.Checksum(e.buf[1+checksumLen:], castagnoli))
	}
	return e.buf
}

// IsChecksumError reports whether err says an entry's checksum failed.
func IsChecksumError(err error) bool { return errors.Is(err, ErrChecksum) }

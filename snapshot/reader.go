package snapshot

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// errStaleSection is returned by a section reader that Next has moved past
// before the caller read it to its end, so the caller cannot mistake the
// rest of the section, which Next discarded, for an empty remainder.
var errStaleSection = errors.New("snapshot: section reader used after Next")

// readBufSize is the size of the Reader's internal buffer.
const readBufSize = 64 << 10

// A Reader reads and verifies a snapshot from an underlying io.Reader.
//
// Sections are visited in order with [Reader.Next]. All checks are made as
// the data streams past, so no part of a snapshot is ever held in memory,
// but it also means that the snapshot as a whole has only been verified
// once Next has returned [io.EOF].
//
// Errors are sticky: once reading has failed, every later call returns the
// same error.
//
// A Reader is not safe for concurrent use.
type Reader struct {
	br    *bufio.Reader
	sum   hash.Hash // SHA-256 of every byte consumed so far
	table *crc32.Table
	hdr   Header

	names map[string]struct{}
	cur   *sectionReader
	err   error // sticky; io.EOF once the snapshot is fully verified

	scratch [2 + MaxNameLen]byte
}

// NewReader reads and validates the snapshot header from r. It reads r
// through its own buffer, so it may consume bytes of r beyond the header.
func NewReader(r io.Reader) (*Reader, error) {
	sr := &Reader{
		br:    bufio.NewReaderSize(r, readBufSize),
		sum:   sha256.New(),
		table: castagnoli(),
		names: make(map[string]struct{}),
	}
	if err := sr.readHeader(); err != nil {
		return nil, err
	}
	return sr, nil
}

// readHeader reads and validates the header. Magic and version are checked
// before the CRC because a later format version may lay out (and checksum)
// its header differently: such a file should be reported as unsupported,
// not as corrupt.
func (r *Reader) readHeader() error {
	var b [headerLen]byte
	if err := r.readFull(b[:10], "", "header"); err != nil {
		return err
	}
	if string(b[0:8]) != Magic {
		return fmt.Errorf("snapshot: header: %w", ErrBadMagic)
	}
	if v := binary.BigEndian.Uint16(b[8:10]); v != FormatVersion {
		return fmt.Errorf("snapshot: header: version %d: %w", v, ErrUnsupportedVersion)
	}
	if err := r.readFull(b[10:], "", "header"); err != nil {
		return err
	}
	if got, want := crc32.Checksum(b[:headerCRCStart], r.table), binary.BigEndian.Uint32(b[28:32]); got != want {
		return fmt.Errorf("snapshot: header: checksum mismatch: %w", ErrCorrupt)
	}
	if f := binary.BigEndian.Uint16(b[10:12]); f != 0 {
		return fmt.Errorf("snapshot: header: unknown flags %#04x: %w", f, ErrCorrupt)
	}
	r.hdr = Header{
		Index: binary.BigEndian.Uint64(b[12:20]),
		Term:  binary.BigEndian.Uint64(b[20:28]),
	}
	return nil
}

// Header returns the snapshot header read by NewReader.
func (r *Reader) Header() Header {
	return r.hdr
}

// Next advances to the next section and returns its name and a reader for
// its data. If the previous section was not read to its end, Next reads and
// verifies the rest of it first. Next returns io.EOF once the end record has
// been read and the section count, the whole-file SHA-256 and the absence
// of trailing bytes have been checked.
//
// The section reader yields data as it streams. When the data ends it checks
// the section's length and CRC32C and returns an error wrapping ErrCorrupt
// instead of io.EOF if they do not match. The section reader is valid only
// until the next call to Next.
//
// Because the snapshot is verified as it streams, data handed out before
// the end is unconfirmed: a section can pass its own CRC and the file still
// fail the final SHA-256 check (for example if sections were spliced from
// different files, or the end record is damaged). A caller that builds new
// state from the sections must therefore build it on the side and only
// adopt it after Next has returned io.EOF; any other error means the whole
// snapshot must be rejected.
func (r *Reader) Next() (name string, section io.Reader, err error) {
	if r.err != nil {
		return "", nil, r.err
	}
	if s := r.cur; s != nil {
		if s.err == nil {
			if _, err := io.Copy(io.Discard, s); err != nil {
				return "", nil, r.fail(err)
			}
			s.err = errStaleSection
		}
		r.cur = nil
	}

	tag := r.scratch[:1]
	if err := r.readFull(tag, "", "record tag"); err != nil {
		return "", nil, err
	}
	switch tag[0] {
	case tagSection:
		return r.startSection()
	case tagEnd:
		if err := r.readEnd(); err != nil {
			return "", nil, err
		}
		return "", nil, r.fail(io.EOF)
	default:
		return "", nil, r.fail(fmt.Errorf("snapshot: after %d sections: unknown record tag %#02x: %w", len(r.names), tag[0], ErrCorrupt))
	}
}

// startSection reads a section's name, after its tag.
func (r *Reader) startSection() (string, io.Reader, error) {
	if len(r.names) >= MaxSections {
		return "", nil, r.fail(fmt.Errorf("snapshot: more than %d sections: %w", MaxSections, ErrCorrupt))
	}
	n := r.scratch[:1]
	if err := r.readFull(n, "", "section name length"); err != nil {
		return "", nil, err
	}
	if n[0] == 0 || n[0] > MaxNameLen {
		return "", nil, r.fail(fmt.Errorf("snapshot: section name length %d: %w", n[0], ErrCorrupt))
	}
	b := r.scratch[:n[0]]
	if err := r.readFull(b, "", "section name"); err != nil {
		return "", nil, err
	}
	name := string(b)
	if !validName(name) {
		return "", nil, r.fail(fmt.Errorf("snapshot: invalid section name %q: %w", name, ErrCorrupt))
	}
	if _, dup := r.names[name]; dup {
		return "", nil, r.fail(fmt.Errorf("snapshot: duplicate section name %q: %w", name, ErrCorrupt))
	}
	r.names[name] = struct{}{}
	r.cur = &sectionReader{r: r, name: name}
	return name, r.cur, nil
}

// readEnd reads and checks the end record, after its tag.
func (r *Reader) readEnd() error {
	b := r.scratch[:endRecordLen-1]
	if err := r.readFull(b, "", "end record"); err != nil {
		return err
	}
	if n := binary.BigEndian.Uint32(b); n != uint32(len(r.names)) {
		return r.fail(fmt.Errorf("snapshot: end record: %d sections recorded, %d read: %w", n, len(r.names), ErrCorrupt))
	}
	var want [sumLen]byte
	got := r.sum.Sum(r.scratch[:0])
	if err := r.readRaw(want[:], "", "file checksum"); err != nil {
		return err
	}
	if !bytes.Equal(got, want[:]) {
		return r.fail(fmt.Errorf("snapshot: file checksum mismatch: %w", ErrCorrupt))
	}
	switch _, err := r.br.ReadByte(); {
	case err == nil:
		return r.fail(fmt.Errorf("snapshot: trailing data after end record: %w", ErrCorrupt))
	case err != io.EOF:
		return r.fail(fmt.Errorf("snapshot: after end record: %w", err))
	}
	return nil
}

// readFull fills b from the input and adds it to the whole-file digest.
// what and section (which may be empty) describe b for error messages;
// they are plain strings so that the per-chunk path does not allocate.
func (r *Reader) readFull(b []byte, section, what string) error {
	if err := r.readRaw(b, section, what); err != nil {
		return err
	}
	r.sum.Write(b)
	return nil
}

// readRaw fills b from the input.
func (r *Reader) readRaw(b []byte, section, what string) error {
	if _, err := io.ReadFull(r.br, b); err != nil {
		return r.fail(readError(section, what, err))
	}
	return nil
}

// readError wraps an input error, turning any form of premature end of
// input into ErrTruncated.
func readError(section, what string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = ErrTruncated
	}
	if section != "" {
		return fmt.Errorf("snapshot: section %q: reading %s: %w", section, what, err)
	}
	return fmt.Errorf("snapshot: reading %s: %w", what, err)
}

// fail makes err the Reader's sticky error.
func (r *Reader) fail(err error) error {
	if r.err == nil {
		r.err = err
	}
	return r.err
}

// sectionReader is the io.Reader returned by Reader.Next.
type sectionReader struct {
	r         *Reader
	name      string
	remaining uint32 // bytes left in the current chunk
	size      uint64 // data bytes read so far
	crc       uint32 // CRC32C of the data read so far
	err       error  // io.EOF once the data has ended and been verified
}

// Read reads section data, crossing chunk boundaries as needed.
func (s *sectionReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	r := s.r
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if s.remaining == 0 {
		if err := s.nextChunk(); err != nil {
			s.err = err
			return 0, err
		}
	}
	if uint64(len(p)) > uint64(s.remaining) {
		p = p[:s.remaining]
	}
	n, err := r.br.Read(p)
	r.sum.Write(p[:n])
	s.crc = crc32.Update(s.crc, r.table, p[:n])
	s.size += uint64(n)
	s.remaining -= uint32(n)
	if err != nil {
		s.err = r.fail(readError(s.name, "data", err))
		return n, s.err
	}
	return n, nil
}

// nextChunk reads the next chunk length. At the data terminator it reads
// and checks the section trailer and returns io.EOF.
func (s *sectionReader) nextChunk() error {
	r := s.r
	b := r.scratch[:chunkLenLen]
	if err := r.readFull(b, s.name, "chunk length"); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(b)
	if n > MaxChunkSize {
		return r.fail(fmt.Errorf("snapshot: section %q: chunk length %d exceeds %d: %w", s.name, n, MaxChunkSize, ErrCorrupt))
	}
	if n > 0 {
		s.remaining = n
		return nil
	}

	b = r.scratch[:sectionTrailerLen]
	if err := r.readFull(b, s.name, "trailer"); err != nil {
		return err
	}
	if want := binary.BigEndian.Uint64(b[0:8]); want != s.size {
		return r.fail(fmt.Errorf("snapshot: section %q: data length %d, trailer says %d: %w", s.name, s.size, want, ErrCorrupt))
	}
	if want := binary.BigEndian.Uint32(b[8:12]); want != s.crc {
		return r.fail(fmt.Errorf("snapshot: section %q: data checksum mismatch: %w", s.name, ErrCorrupt))
	}
	return io.EOF
}

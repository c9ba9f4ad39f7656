package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// Errors for misuse of a Writer. They are programming errors, not
// properties of the data, so they are not exported.
var (
	errSectionOpen   = errors.New("a section is still open")
	errWriterClosed  = errors.New("writer is closed")
	errSectionClosed = errors.New("section is closed")
	errBadName       = errors.New("invalid section name")
	errDuplicateName = errors.New("duplicate section name")
	errTooMany       = errors.New("too many sections")
)

// A Writer writes a snapshot to an underlying io.Writer.
//
// Sections are written one after the other with [Writer.Section], and the
// snapshot is completed by [Writer.Close]. A snapshot whose Close did not
// succeed is incomplete and will be rejected by a Reader.
//
// Errors are sticky: once any method has returned an error, every later
// call returns that same error and nothing more is written. The partial
// output must then be discarded.
//
// A Writer is not safe for concurrent use.
type Writer struct {
	w   io.Writer
	sum hash.Hash // SHA-256 of every byte written so far

	// buf holds a chunk being assembled: a 4-byte length prefix, up to
	// writeChunkSize bytes of data and room for a section trailer, so that
	// closing a small section costs a single write. Outside a section it
	// is scratch space for the other records.
	buf []byte

	names  map[string]struct{}
	open   *sectionWriter
	closed bool
	err    error
}

// NewWriter writes the snapshot header for h to w and returns a Writer for
// the sections. The Writer does not close w.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	sw := &Writer{
		w:     w,
		sum:   sha256.New(),
		buf:   make([]byte, chunkLenLen+writeChunkSize+chunkLenLen+sectionTrailerLen),
		names: make(map[string]struct{}),
	}
	putHeader(sw.buf[:headerLen], h)
	if err := sw.emit(sw.buf[:headerLen]); err != nil {
		return nil, err
	}
	return sw, nil
}

// Section starts a new section called name and returns a writer for its
// data. Names must be 1 to MaxNameLen bytes from [a-z0-9._-] and unique
// within the snapshot. Only one section may be open at a time: the returned
// writer must be closed before the next section is started or the Writer is
// closed.
//
// Data written to the section is buffered and emitted in chunks of up to
// 64 KiB, so callers need not buffer themselves.
func (w *Writer) Section(name string) (io.WriteCloser, error) {
	if w.err != nil {
		return nil, w.err
	}
	switch {
	case w.closed:
		return nil, w.fail(fmt.Errorf("snapshot: section %q: %w", name, errWriterClosed))
	case w.open != nil:
		return nil, w.fail(fmt.Errorf("snapshot: section %q: section %q: %w", name, w.open.name, errSectionOpen))
	case !validName(name):
		return nil, w.fail(fmt.Errorf("snapshot: section %q: %w", name, errBadName))
	case len(w.names) >= MaxSections:
		return nil, w.fail(fmt.Errorf("snapshot: section %q: more than %d: %w", name, MaxSections, errTooMany))
	}
	if _, dup := w.names[name]; dup {
		return nil, w.fail(fmt.Errorf("snapshot: section %q: %w", name, errDuplicateName))
	}

	b := w.buf[:2+len(name)]
	b[0] = tagSection
	b[1] = byte(len(name))
	copy(b[2:], name)
	if err := w.emit(b); err != nil {
		return nil, err
	}
	w.names[name] = struct{}{}
	w.open = &sectionWriter{w: w, name: name, table: castagnoli()}
	return w.open, nil
}

// Close writes the end record, completing the snapshot. It is an error to
// close the Writer while a section is open. Close does not close the
// underlying io.Writer; closing an already closed Writer does nothing.
func (w *Writer) Close() error {
	if w.err != nil || w.closed {
		return w.err
	}
	if w.open != nil {
		return w.fail(fmt.Errorf("snapshot: close: section %q: %w", w.open.name, errSectionOpen))
	}
	b := w.buf[:endRecordLen]
	b[0] = tagEnd
	binary.BigEndian.PutUint32(b[1:], uint32(len(w.names)))
	w.sum.Write(b)
	b = w.sum.Sum(b) // the digest covers the end record's own tag and count
	if err := w.writeRaw(b); err != nil {
		return err
	}
	w.closed = true
	return nil
}

// emit writes b and adds it to the whole-file digest.
func (w *Writer) emit(b []byte) error {
	w.sum.Write(b)
	return w.writeRaw(b)
}

// writeRaw writes b to the underlying writer, recording any failure.
func (w *Writer) writeRaw(b []byte) error {
	n, err := w.w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return w.fail(fmt.Errorf("snapshot: write: %w", err))
	}
	return nil
}

// fail makes err the Writer's sticky error.
func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// sectionWriter is the io.WriteCloser returned by Writer.Section.
type sectionWriter struct {
	w      *Writer
	name   string
	table  *crc32.Table
	n      int    // data bytes pending in w.buf
	size   uint64 // data bytes accepted so far
	crc    uint32 // CRC32C of the data accepted so far
	closed bool
}

// Write buffers p into the section, emitting every full chunk.
func (s *sectionWriter) Write(p []byte) (int, error) {
	w := s.w
	if w.err != nil {
		return 0, w.err
	}
	if s.closed {
		return 0, w.fail(fmt.Errorf("snapshot: section %q: write: %w", s.name, errSectionClosed))
	}
	written := 0
	for len(p) > 0 {
		n := copy(w.buf[chunkLenLen+s.n:chunkLenLen+writeChunkSize], p)
		s.crc = crc32.Update(s.crc, s.table, p[:n])
		s.size += uint64(n)
		s.n += n
		written += n
		p = p[n:]
		if s.n == writeChunkSize {
			if err := s.flush(0); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// Close emits the buffered data, the data terminator and the section
// trailer. Closing an already closed section does nothing.
func (s *sectionWriter) Close() error {
	w := s.w
	if w.err != nil || s.closed {
		return w.err
	}
	// Append terminator and trailer behind any pending data so that the
	// common small section costs one write.
	t := w.buf[chunkLenLen+s.n:]
	binary.BigEndian.PutUint32(t[0:4], 0)
	binary.BigEndian.PutUint64(t[4:12], s.size)
	binary.BigEndian.PutUint32(t[12:16], s.crc)
	if err := s.flush(chunkLenLen + sectionTrailerLen); err != nil {
		return err
	}
	s.closed = true
	w.open = nil
	return nil
}

// flush emits the pending chunk, if any, followed by the extra bytes that
// the caller placed in w.buf right behind the pending data.
func (s *sectionWriter) flush(extra int) error {
	w := s.w
	b := w.buf[chunkLenLen : chunkLenLen+s.n+extra]
	if s.n > 0 {
		binary.BigEndian.PutUint32(w.buf[:chunkLenLen], uint32(s.n))
		b = w.buf[:chunkLenLen+s.n+extra]
	}
	s.n = 0
	return w.emit(b)
}

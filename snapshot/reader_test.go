package snapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestTruncation(t *testing.T) {
	b := smallFile(t)
	for i := 0; i < len(b); i++ {
		_, _, err := decode(bytes.NewReader(b[:i]))
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated at %d of %d: err = %v, want ErrTruncated", i, len(b), err)
		}
	}
}

func TestTruncationOneByteReader(t *testing.T) {
	// Same again, delivering the input one byte at a time so that every
	// read path sees the end of input.
	b := smallFile(t)
	for i := 0; i < len(b); i++ {
		_, _, err := decode(iotest.OneByteReader(bytes.NewReader(b[:i])))
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated at %d of %d: err = %v, want ErrTruncated", i, len(b), err)
		}
	}
}

func TestBitFlips(t *testing.T) {
	b := smallFile(t)
	if _, _, err := decode(bytes.NewReader(b)); err != nil {
		t.Fatalf("pristine file: %v", err)
	}
	c := make([]byte, len(b))
	for i := range b {
		for bit := range 8 {
			copy(c, b)
			c[i] ^= 1 << bit
			_, _, err := decode(bytes.NewReader(c))
			if err == nil {
				t.Fatalf("flipping bit %d of byte %d went undetected", bit, i)
			}
			if _, _, verr := Verify(bytes.NewReader(c)); verr == nil {
				t.Fatalf("flipping bit %d of byte %d: Verify missed it", bit, i)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) &&
				!errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("flipping bit %d of byte %d: unexpected error kind: %v", bit, i, err)
			}
		}
	}
}

func TestTrailingGarbage(t *testing.T) {
	for _, extra := range [][]byte{{0}, {'S'}, []byte("garbage"), make([]byte, 100000)} {
		b := append(smallFile(t), extra...)
		_, _, err := decode(bytes.NewReader(b))
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "trailing") {
			t.Errorf("%d trailing bytes: err = %v, want trailing data error", len(extra), err)
		}
	}
}

// withHeader returns a copy of b with header bytes [off, off+len(v)) set to
// v, and the header CRC fixed up if fixCRC.
func withHeader(b []byte, off int, v []byte, fixCRC bool) []byte {
	c := bytes.Clone(b)
	copy(c[off:], v)
	if fixCRC {
		binary.BigEndian.PutUint32(c[28:], crc32.Checksum(c[:28], crc32.MakeTable(crc32.Castagnoli)))
	}
	return c
}

func TestHeaderErrors(t *testing.T) {
	b := smallFile(t)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"bad magic", withHeader(b, 0, []byte("RCNFSNAQ"), true), ErrBadMagic},
		{"not a snapshot", []byte("PK\x03\x04 this is a zip file, honest, with some more bytes"), ErrBadMagic},
		{"short non-snapshot", []byte("hi"), ErrTruncated},
		{"version 2", withHeader(b, 8, []byte{0, 2}, true), ErrUnsupportedVersion},
		{"version 0", withHeader(b, 8, []byte{0, 0}, true), ErrUnsupportedVersion},
		{"version 2, short header", withHeader(b, 8, []byte{0, 2}, true)[:12], ErrUnsupportedVersion},
		{"header crc", withHeader(b, 28, []byte{0, 0, 0, 0}, false), ErrCorrupt},
		{"flags", withHeader(b, 10, []byte{0, 1}, true), ErrCorrupt},
		{"empty", nil, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) || r != nil {
				t.Fatalf("NewReader = %v, %v; want nil, %v", r, err, tt.want)
			}
			if _, _, err := Verify(bytes.NewReader(tt.in)); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Index: 123456789, Term: 42}
	r, err := NewReader(bytes.NewReader(encode(t, h, nil, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if r.Header() != h {
		t.Fatalf("Header() = %+v, want %+v", r.Header(), h)
	}
}

// TestCorruptStructure feeds files whose whole-file checksum is valid but
// whose structure is not, so that each structural check must fire by
// itself.
func TestCorruptStructure(t *testing.T) {
	crc := func(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }
	h := Header{Index: 1, Term: 1}

	manySections := newRawFile(h)
	for i := range MaxSections + 1 {
		manySections.section(fmt.Sprintf("s%d", i))
	}

	tests := []struct {
		name    string
		in      []byte
		wantErr string // substring of the error message
	}{
		{"chunk too long", newRawFile(h).sectionStart("a").u32(MaxChunkSize + 1).Bytes(), "chunk length"},
		{"chunk max u32", newRawFile(h).sectionStart("a").u32(1<<32 - 1).Bytes(), "chunk length"},
		{"name length 0", newRawFile(h).u8('S').u8(0).trailer(0, 0).end(1), "name length 0"},
		{"name length 65", newRawFile(h).u8('S').u8(65).str(strings.Repeat("a", 65)).trailer(0, 0).end(1), "name length 65"},
		{"name upper case", newRawFile(h).section("Abc").end(1), "invalid section name"},
		{"name slash", newRawFile(h).section("a/b").end(1), "invalid section name"},
		{"name NUL", newRawFile(h).section("a\x00").end(1), "invalid section name"},
		{"duplicate name", newRawFile(h).section("a").section("b").section("a").end(3), "duplicate"},
		{"too many sections", manySections.end(MaxSections + 1), "more than 1024"},
		{"unknown tag", newRawFile(h).section("a").u8('X').end(1), "unknown record tag"},
		{"tag zero", newRawFile(h).u8(0).end(0), "unknown record tag"},
		{"count too low", newRawFile(h).section("a").section("b").end(1), "1 sections recorded, 2 read"},
		{"count too high", newRawFile(h).section("a").end(2), "2 sections recorded, 1 read"},
		{"length too high", newRawFile(h).sectionStart("a").chunk([]byte("abc")).trailer(4, crc([]byte("abc"))).end(1), "data length 3, trailer says 4"},
		{"length too low", newRawFile(h).sectionStart("a").chunk([]byte("abc")).trailer(2, crc([]byte("abc"))).end(1), "data length 3, trailer says 2"},
		{"data crc", newRawFile(h).sectionStart("a").chunk([]byte("abc")).trailer(3, crc([]byte("abd"))).end(1), "data checksum mismatch"},
		{"empty data crc", newRawFile(h).sectionStart("a").trailer(0, 1).end(1), "data checksum mismatch"},
		{"file checksum", func() []byte {
			b := newRawFile(h).section("a", []byte("abc")).end(1)
			b[len(b)-1] ^= 1
			return b
		}(), "file checksum mismatch"},
		{"sections spliced", func() []byte {
			// Every section is internally consistent; only the file
			// checksum can tell that this is not what was written.
			b := newRawFile(h).section("a", []byte("abc")).end(1)
			c := newRawFile(h).section("a", []byte("xyz")).end(1)
			return append(append([]byte{}, c[:len(c)-sumLen]...), b[len(b)-sumLen:]...)
		}(), "file checksum mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decode(bytes.NewReader(tt.in))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestStickyReaderError(t *testing.T) {
	b := newRawFile(Header{}).section("a", []byte("abc")).u8('?').end(1)
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.Next()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Next = %v, want ErrCorrupt", err)
	}
	for range 3 {
		if _, _, err2 := r.Next(); err2 != err {
			t.Fatalf("Next after error = %v, want %v", err2, err)
		}
	}
	if _, err2 := sec.Read(make([]byte, 1)); err2 == nil {
		t.Fatalf("section Read after reader error succeeded")
	}
}

func TestEOFIsSticky(t *testing.T) {
	r, err := NewReader(bytes.NewReader(smallFile(t)))
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, _, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next after EOF = %v, want io.EOF", err)
	}
}

// failingReader returns its data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestInputErrorsPropagate(t *testing.T) {
	errDisk := errors.New("disk on fire")
	b := smallFile(t)
	for i := 0; i <= len(b); i++ {
		_, _, err := decode(&failingReader{data: b[:i], err: errDisk})
		if !errors.Is(err, errDisk) {
			t.Fatalf("input error after %d bytes: err = %v, want %v", i, err, errDisk)
		}
	}
}

func TestUnexpectedEOFFromInput(t *testing.T) {
	// An input that reports io.ErrUnexpectedEOF itself still counts as
	// truncation.
	b := smallFile(t)
	_, _, err := decode(&failingReader{data: b[:50], err: io.ErrUnexpectedEOF})
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", err)
	}
}

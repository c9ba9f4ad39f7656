package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// testSection is a section's name and complete data, as a test sees it.
type testSection struct {
	name string
	data []byte
}

// encode writes a snapshot of secs. writeSize is the size of the individual
// writes into each section; 0 means a single write of the whole data.
func encode(t testing.TB, h Header, secs []testSection, writeSize int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, h)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	for _, s := range secs {
		sw, err := w.Section(s.name)
		if err != nil {
			t.Fatalf("Section(%q): %v", s.name, err)
		}
		data := s.data
		step := writeSize
		if step <= 0 {
			step = max(len(data), 1)
		}
		for len(data) > 0 {
			n := min(step, len(data))
			if m, err := sw.Write(data[:n]); m != n || err != nil {
				t.Fatalf("section %q: Write = %d, %v; want %d, nil", s.name, m, err, n)
			}
			data = data[n:]
		}
		if err := sw.Close(); err != nil {
			t.Fatalf("section %q: Close: %v", s.name, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

// decode reads a whole snapshot from r, returning the header, the sections
// and the error that ended reading (nil when Next returned io.EOF).
func decode(r io.Reader) (Header, []testSection, error) {
	sr, err := NewReader(r)
	if err != nil {
		return Header{}, nil, err
	}
	var secs []testSection
	for {
		name, sec, err := sr.Next()
		if err == io.EOF {
			return sr.Header(), secs, nil
		}
		if err != nil {
			return sr.Header(), secs, err
		}
		var data bytes.Buffer
		if _, err := io.Copy(&data, sec); err != nil {
			return sr.Header(), secs, err
		}
		secs = append(secs, testSection{name, data.Bytes()})
	}
}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func equalSections(a, b []testSection) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].name != b[i].name || !bytes.Equal(a[i].data, b[i].data) {
			return false
		}
	}
	return true
}

func describe(secs []testSection) string {
	var parts []string
	for _, s := range secs {
		parts = append(parts, fmt.Sprintf("%s:%d", s.name, len(s.data)))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// smallFile is a multi-section snapshot small enough to corrupt exhaustively.
func smallFile(t testing.TB) []byte {
	return encode(t, Header{Index: 42, Term: 7}, []testSection{
		{"meta", []byte("hello")},
		{"empty", nil},
		{"data.v1", randomBytes(1, 40)},
	}, 0)
}

func TestRoundTrip(t *testing.T) {
	const k = 64 << 10
	sizes := []int{0, 1, k - 1, k, k + 1, 3 << 20}
	var several []testSection
	for i, n := range sizes {
		several = append(several, testSection{fmt.Sprintf("s%d_%d", i, n), randomBytes(uint64(i), n)})
	}

	tests := []struct {
		name string
		h    Header
		secs []testSection
	}{
		{"no sections", Header{Index: 1, Term: 1}, nil},
		{"one empty section", Header{Index: 10, Term: 2}, []testSection{{"empty", nil}}},
		{"several", Header{Index: 1<<64 - 1, Term: 1<<64 - 1}, several},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var canonical []byte
			for _, ws := range []int{0, 1 << 20, 4093, 7} {
				b := encode(t, tt.h, tt.secs, ws)
				if canonical == nil {
					canonical = b
				} else if !bytes.Equal(b, canonical) {
					t.Fatalf("write size %d: output differs from one big write", ws)
				}
				h, secs, err := decode(bytes.NewReader(b))
				if err != nil {
					t.Fatalf("write size %d: decode: %v", ws, err)
				}
				if h != tt.h {
					t.Errorf("write size %d: header = %+v, want %+v", ws, h, tt.h)
				}
				if !equalSections(secs, tt.secs) {
					t.Errorf("write size %d: sections = %s, want %s", ws, describe(secs), describe(tt.secs))
				}
			}

			// Odd read patterns must not matter.
			for name, wrap := range map[string]func(io.Reader) io.Reader{
				"half":     iotest.HalfReader,
				"data-err": iotest.DataErrReader,
			} {
				_, secs, err := decode(wrap(bytes.NewReader(canonical)))
				if err != nil || !equalSections(secs, tt.secs) {
					t.Errorf("%s reader: sections = %s, err = %v", name, describe(secs), err)
				}
			}

			hdr, infos, err := Verify(bytes.NewReader(canonical))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if hdr != tt.h || len(infos) != len(tt.secs) {
				t.Fatalf("Verify = %+v, %v", hdr, infos)
			}
			for i, info := range infos {
				if info.Name != tt.secs[i].name || info.Size != int64(len(tt.secs[i].data)) {
					t.Errorf("Verify section %d = %+v, want %s:%d", i, info, tt.secs[i].name, len(tt.secs[i].data))
				}
			}
		})
	}
}

func TestOneByteReader(t *testing.T) {
	want := []testSection{{"a", randomBytes(3, 1000)}, {"b", nil}, {"c", []byte("x")}}
	b := encode(t, Header{Index: 5, Term: 3}, want, 0)
	_, got, err := decode(iotest.OneByteReader(bytes.NewReader(b)))
	if err != nil || !equalSections(got, want) {
		t.Fatalf("sections = %s, err = %v", describe(got), err)
	}
}

// rawFile builds snapshot files byte by byte, including malformed ones. It
// keeps its own implementation of the format so that the tests check the
// Writer against the specification rather than against itself.
type rawFile struct{ bytes.Buffer }

func newRawFile(h Header) *rawFile {
	f := new(rawFile)
	var b [32]byte
	copy(b[:], "RCNFSNAP")
	binary.BigEndian.PutUint16(b[8:], 1)
	binary.BigEndian.PutUint64(b[12:], h.Index)
	binary.BigEndian.PutUint64(b[20:], h.Term)
	binary.BigEndian.PutUint32(b[28:], crc32.Checksum(b[:28], crc32.MakeTable(crc32.Castagnoli)))
	f.Write(b[:])
	return f
}

func (f *rawFile) u8(v byte) *rawFile { f.WriteByte(v); return f }

func (f *rawFile) u32(v uint32) *rawFile {
	f.Write(binary.BigEndian.AppendUint32(nil, v))
	return f
}

func (f *rawFile) u64(v uint64) *rawFile {
	f.Write(binary.BigEndian.AppendUint64(nil, v))
	return f
}

func (f *rawFile) str(s string) *rawFile { f.WriteString(s); return f }

// sectionStart writes a section tag and name.
func (f *rawFile) sectionStart(name string) *rawFile {
	return f.u8('S').u8(byte(len(name))).str(name)
}

// chunk writes a length-prefixed chunk.
func (f *rawFile) chunk(data []byte) *rawFile {
	f.u32(uint32(len(data)))
	f.Write(data)
	return f
}

// trailer writes a data terminator and section trailer.
func (f *rawFile) trailer(size uint64, crc uint32) *rawFile {
	return f.u32(0).u64(size).u32(crc)
}

// section writes a whole, well-formed section made of the given chunks.
func (f *rawFile) section(name string, chunks ...[]byte) *rawFile {
	f.sectionStart(name)
	var size uint64
	var crc uint32
	for _, c := range chunks {
		f.chunk(c)
		size += uint64(len(c))
		crc = crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), c)
	}
	return f.trailer(size, crc)
}

// end writes an end record with a correct file checksum and returns the
// finished file.
func (f *rawFile) end(count uint32) []byte {
	f.u8('E').u32(count)
	sum := sha256.Sum256(f.Bytes())
	f.Write(sum[:])
	return f.Bytes()
}

func TestGoldenLayout(t *testing.T) {
	h := Header{Index: 0x0102030405060708, Term: 0x1112131415161718}
	big := randomBytes(9, 2*writeChunkSize+3)
	got := encode(t, h, []testSection{
		{"a", []byte("hello")},
		{"empty", nil},
		{"big", big},
	}, 1000)

	want := newRawFile(h).
		section("a", []byte("hello")).
		section("empty").
		section("big", big[:writeChunkSize], big[writeChunkSize:2*writeChunkSize], big[2*writeChunkSize:]).
		end(3)
	if !bytes.Equal(got, want) {
		t.Fatalf("writer output differs from the specified layout")
	}

	wantHeader := []byte{
		'R', 'C', 'N', 'F', 'S', 'N', 'A', 'P',
		0, 1, // version
		0, 0, // flags
		1, 2, 3, 4, 5, 6, 7, 8,
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
	}
	if !bytes.Equal(got[:28], wantHeader) {
		t.Fatalf("header = %x, want %x", got[:28], wantHeader)
	}
}

func TestReaderAcceptsOtherChunking(t *testing.T) {
	// Readers accept any chunk size from 1 to MaxChunkSize, not just what
	// the Writer produces.
	data := randomBytes(4, MaxChunkSize+10)
	b := newRawFile(Header{Index: 1, Term: 1}).
		section("x", data[:1], data[1:MaxChunkSize+1], data[MaxChunkSize+1:]).
		end(1)
	_, secs, err := decode(bytes.NewReader(b))
	if err != nil || !equalSections(secs, []testSection{{"x", data}}) {
		t.Fatalf("sections = %s, err = %v", describe(secs), err)
	}
}

func TestPartialRead(t *testing.T) {
	want := []testSection{
		{"first", randomBytes(1, 200<<10)},
		{"second", randomBytes(2, 10)},
		{"third", randomBytes(3, 100<<10)},
	}
	b := encode(t, Header{Index: 3, Term: 1}, want, 0)

	for _, readLen := range []int{0, 1, writeChunkSize, writeChunkSize + 5} {
		t.Run(fmt.Sprint(readLen), func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				name, sec, err := r.Next()
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				if name != want[i].name {
					t.Fatalf("name = %q, want %q", name, want[i].name)
				}
				n := min(readLen, len(want[i].data))
				got := make([]byte, n)
				if _, err := io.ReadFull(sec, got); err != nil {
					t.Fatalf("section %q: %v", name, err)
				}
				if !bytes.Equal(got, want[i].data[:n]) {
					t.Fatalf("section %q: wrong data", name)
				}
			}
			if _, _, err := r.Next(); err != io.EOF {
				t.Fatalf("final Next = %v, want io.EOF", err)
			}
		})
	}
}

func TestPartialReadDetectsCorruption(t *testing.T) {
	// Damage the tail of a section the caller never reads: Next, which
	// drains it, must notice.
	data := randomBytes(5, 100)
	f := newRawFile(Header{}).sectionStart("a").chunk(data)
	f.trailer(100, crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))^1)
	b := f.section("b", []byte("x")).end(2)

	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sec.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	_, _, err = r.Next()
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("Next = %v, want data checksum error", err)
	}
	if _, _, err2 := r.Next(); err2 != err {
		t.Fatalf("Next after error = %v, want sticky %v", err2, err)
	}
}

func TestStaleSectionReader(t *testing.T) {
	b := encode(t, Header{}, []testSection{{"a", []byte("0123456789")}, {"b", []byte("xy")}}, 0)
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	_, a, _ := r.Next()
	if _, err := a.Read(make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	_, bsec, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := a.Read(make([]byte, 3)); n != 0 || !errors.Is(err, errStaleSection) {
		t.Fatalf("stale Read = %d, %v; want 0, %v", n, err, errStaleSection)
	}
	// The stale reader must not have disturbed the current one.
	got, err := io.ReadAll(bsec)
	if err != nil || string(got) != "xy" {
		t.Fatalf("current section = %q, %v", got, err)
	}
	// A section read to its end keeps reporting io.EOF after Next.
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("Next = %v, want io.EOF", err)
	}
	if n, err := bsec.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("Read after end = %d, %v; want 0, io.EOF", n, err)
	}
}

func TestSectionIOTest(t *testing.T) {
	data := randomBytes(6, 3*writeChunkSize+17)
	b := encode(t, Header{}, []testSection{{"a", data}}, 0)
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if err := iotest.TestReader(sec, data); err != nil {
		t.Fatal(err)
	}
}

func TestMaxSections(t *testing.T) {
	secs := make([]testSection, MaxSections)
	for i := range secs {
		secs[i] = testSection{name: fmt.Sprintf("s%04d", i), data: []byte{byte(i)}}
	}
	b := encode(t, Header{}, secs, 0)
	_, got, err := decode(bytes.NewReader(b))
	if err != nil || !equalSections(got, secs) {
		t.Fatalf("decode %d sections: got %d, err = %v", MaxSections, len(got), err)
	}

	w, err := NewWriter(io.Discard, Header{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secs {
		sw, err := w.Section(s.name)
		if err != nil {
			t.Fatal(err)
		}
		sw.Close()
	}
	if _, err := w.Section("one-too-many"); !errors.Is(err, errTooMany) {
		t.Fatalf("Section %d = %v, want %v", MaxSections+1, err, errTooMany)
	}
}

func TestVerifyRejects(t *testing.T) {
	b := smallFile(t)
	b[len(b)-40] ^= 0x80
	h, infos, err := Verify(bytes.NewReader(b))
	if err == nil || h != (Header{}) || infos != nil {
		t.Fatalf("Verify(corrupt) = %+v, %v, %v", h, infos, err)
	}
}

func TestValidName(t *testing.T) {
	valid := []string{"a", "0", "fsm.sessions", "a_b-c.d", strings.Repeat("z", MaxNameLen), "..", "-"}
	invalid := []string{"", "A", "a b", "a/b", "é", "a\x00", strings.Repeat("z", MaxNameLen+1)}
	for _, n := range valid {
		if !validName(n) {
			t.Errorf("validName(%q) = false", n)
		}
	}
	for _, n := range invalid {
		if validName(n) {
			t.Errorf("validName(%q) = true", n)
		}
	}
}

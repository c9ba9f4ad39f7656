package snapshot

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the Reader. It must never panic, must
// classify every failure, and whatever it accepts must survive a round trip
// through the Writer.
func FuzzReader(f *testing.F) {
	f.Add(encode(f, Header{}, nil, 0))
	f.Add(encode(f, Header{Index: 9, Term: 2}, []testSection{{"empty", nil}}, 0))
	f.Add(smallFile(f))
	f.Add(encode(f, Header{Index: 1 << 40, Term: 3}, []testSection{
		{"a", []byte("x")},
		{"b.c", randomBytes(2, 300)},
		{"d_e-f", []byte("the quick brown fox")},
	}, 0))
	f.Add(newRawFile(Header{Index: 3, Term: 3}).section("odd", []byte("a"), []byte("bc"), []byte("def")).end(1))
	f.Add([]byte(Magic))

	f.Fuzz(func(t *testing.T, in []byte) {
		h, secs, err := decode(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) &&
				!errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}

		// Accepted input: its sections must round-trip, and the Writer's
		// encoding is canonical, so encoding again gives the same bytes.
		out := encode(t, h, secs, 0)
		h2, secs2, err := decode(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("re-encoded file rejected: %v", err)
		}
		if h2 != h || !equalSections(secs2, secs) {
			t.Fatalf("re-encoded file differs: %+v %s, want %+v %s", h2, describe(secs2), h, describe(secs))
		}
		if again := encode(t, h2, secs2, 0); !bytes.Equal(again, out) {
			t.Fatalf("encoding is not canonical")
		}
		hv, infos, err := Verify(bytes.NewReader(in))
		if err != nil || hv != h || len(infos) != len(secs) {
			t.Fatalf("Verify disagrees with Reader: %+v %v %v", hv, infos, err)
		}
	})
}

// FuzzRoundTrip drives the Writer with arbitrary section layouts and write
// patterns and checks that the Reader returns exactly what went in.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint64(2), []byte("a\x00b\x05hello"), uint16(3))
	f.Add(uint64(0), uint64(0), []byte{}, uint16(0))
	f.Add(uint64(7), uint64(7), bytes.Repeat([]byte{0xff}, 200), uint16(1))

	f.Fuzz(func(t *testing.T, index, term uint64, layout []byte, writeSize uint16) {
		// layout is a sequence of (name byte, length byte) pairs; section
		// data is derived from them so that the fuzzer controls sizes
		// cheaply.
		var secs []testSection
		seen := map[string]bool{}
		for i := 0; i+1 < len(layout) && len(secs) < 16; i += 2 {
			name := string(rune('a' + layout[i]%26))
			if seen[name] {
				continue
			}
			seen[name] = true
			n := int(layout[i+1]) * 1031
			secs = append(secs, testSection{name, randomBytes(uint64(layout[i]), n)})
		}
		h := Header{Index: index, Term: term}
		b := encode(t, h, secs, int(writeSize))
		if want := encode(t, h, secs, 0); !bytes.Equal(b, want) {
			t.Fatalf("output depends on write size %d", writeSize)
		}
		h2, got, err := decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if h2 != h || !equalSections(got, secs) {
			t.Fatalf("round trip: got %+v %s, want %+v %s", h2, describe(got), h, describe(secs))
		}
	})
}

package snapshot

import (
	"bytes"
	"io"
	"testing"
)

const benchSize = 64 << 20

func BenchmarkWrite(b *testing.B) {
	data := randomBytes(1, 1<<20)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		w, err := NewWriter(io.Discard, Header{Index: 1, Term: 1})
		if err != nil {
			b.Fatal(err)
		}
		sw, err := w.Section("data")
		if err != nil {
			b.Fatal(err)
		}
		for range benchSize / len(data) {
			if _, err := sw.Write(data); err != nil {
				b.Fatal(err)
			}
		}
		if err := sw.Close(); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	file := encode(b, Header{Index: 1, Term: 1}, []testSection{{"data", randomBytes(1, benchSize)}}, 0)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(file))
		if err != nil {
			b.Fatal(err)
		}
		_, sec, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, sec); n != benchSize || err != nil {
			b.Fatalf("read %d bytes, %v", n, err)
		}
		if _, _, err := r.Next(); err != io.EOF {
			b.Fatalf("Next = %v, want io.EOF", err)
		}
	}
}

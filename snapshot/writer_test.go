package snapshot

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// checkSticky asserts that after w failed with err, every call returns err
// and nothing more reaches buf.
func checkSticky(t *testing.T, w *Writer, buf *bytes.Buffer, err error) {
	t.Helper()
	n := buf.Len()
	if _, err2 := w.Section("later"); err2 != err {
		t.Errorf("Section after error = %v, want %v", err2, err)
	}
	if err2 := w.Close(); err2 != err {
		t.Errorf("Close after error = %v, want %v", err2, err)
	}
	if buf.Len() != n {
		t.Errorf("%d bytes written after error", buf.Len()-n)
	}
}

func TestWriterMisuse(t *testing.T) {
	tests := []struct {
		name string
		run  func(w *Writer) error
		want error
	}{
		{"two open sections", func(w *Writer) error {
			if _, err := w.Section("a"); err != nil {
				return nil
			}
			_, err := w.Section("b")
			return err
		}, errSectionOpen},
		{"close with open section", func(w *Writer) error {
			sw, err := w.Section("a")
			if err != nil {
				return nil
			}
			sw.Write([]byte("data"))
			return w.Close()
		}, errSectionOpen},
		{"duplicate name", func(w *Writer) error {
			sw, err := w.Section("a")
			if err != nil {
				return nil
			}
			sw.Close()
			_, err = w.Section("a")
			return err
		}, errDuplicateName},
		{"write after section close", func(w *Writer) error {
			sw, err := w.Section("a")
			if err != nil {
				return nil
			}
			sw.Close()
			_, err = sw.Write([]byte("x"))
			return err
		}, errSectionClosed},
		{"section after close", func(w *Writer) error {
			if err := w.Close(); err != nil {
				return nil
			}
			_, err := w.Section("a")
			return err
		}, errWriterClosed},
	}
	for _, name := range []string{"", "A", "a b", "a/b", "é", "a\x00b", strings.Repeat("x", MaxNameLen+1)} {
		tests = append(tests, struct {
			name string
			run  func(w *Writer) error
			want error
		}{"bad name " + name, func(w *Writer) error {
			_, err := w.Section(name)
			return err
		}, errBadName})
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w, err := NewWriter(&buf, Header{Index: 1, Term: 1})
			if err != nil {
				t.Fatal(err)
			}
			err = tt.run(w)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			checkSticky(t, w, &buf, err)
		})
	}
}

func TestWriterCloseTwice(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := w.Section("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatalf("second section Close = %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	n := buf.Len()
	if err := w.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if buf.Len() != n {
		t.Fatalf("second Close wrote %d bytes", buf.Len()-n)
	}
	if _, _, err := Verify(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
}

// limitedWriter accepts limit bytes, then fails every write.
type limitedWriter struct {
	limit  int
	short  bool // fail by writing short rather than by returning an error
	err    error
	writes int // calls after the failure
	buf    bytes.Buffer
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.limit <= 0 {
		l.writes++
	}
	if len(p) <= l.limit {
		l.limit -= len(p)
		return l.buf.Write(p)
	}
	n := max(l.limit, 0)
	l.buf.Write(p[:n])
	l.limit = 0
	if l.short {
		return n, nil
	}
	return n, l.err
}

func TestWriterOutputErrors(t *testing.T) {
	errFull := errors.New("disk full")
	data := randomBytes(8, 3*writeChunkSize)
	full := encode(t, Header{}, []testSection{{"a", data}, {"b", []byte("x")}}, 0)

	for _, short := range []bool{false, true} {
		want := errFull
		if short {
			want = io.ErrShortWrite
		}
		for _, limit := range []int{0, 10, 32, 33, 40, 1000, writeChunkSize + 40, len(full) - 40, len(full) - 1} {
			lw := &limitedWriter{limit: limit, short: short, err: errFull}
			err := func() error {
				w, err := NewWriter(lw, Header{})
				if err != nil {
					return err
				}
				for _, s := range []testSection{{"a", data}, {"b", []byte("x")}} {
					sw, err := w.Section(s.name)
					if err != nil {
						return err
					}
					if _, err := sw.Write(s.data); err != nil {
						if err2 := sw.Close(); err2 != err {
							t.Errorf("limit %d: section Close after error = %v, want %v", limit, err2, err)
						}
						if _, err2 := sw.Write(s.data); err2 != err {
							t.Errorf("limit %d: Write after error = %v, want %v", limit, err2, err)
						}
						return err
					}
					if err := sw.Close(); err != nil {
						return err
					}
				}
				return w.Close()
			}()
			if !errors.Is(err, want) {
				t.Errorf("short=%v limit %d: err = %v, want %v", short, limit, err, want)
			}
			if lw.writes > 1 {
				t.Errorf("short=%v limit %d: %d writes after the first failure", short, limit, lw.writes-1)
			}
			if !bytes.HasPrefix(full, lw.buf.Bytes()) {
				t.Errorf("short=%v limit %d: partial output is not a prefix of the real output", short, limit)
			}
		}
	}
}

func TestEmptyWrite(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{})
	sw, _ := w.Section("a")
	if n, err := sw.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
	sw.Close()
	w.Close()
	want := encode(t, Header{}, []testSection{{"a", nil}}, 0)
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("empty write changed the output")
	}
}

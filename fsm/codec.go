package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The binary codec shared by log entries, results and snapshot sections:
// unsigned varints, length-prefixed strings, raw 16-byte ids. It is small on
// purpose: every byte it reads may come from a damaged disk or a hostile
// peer, so every read is bounds-checked and no length is trusted beyond the
// bytes actually present.

var errShort = errors.New("unexpected end of data")

type encoder struct {
	buf []byte
}

func (e *encoder) u8(v uint8)       { e.buf = append(e.buf, v) }
func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) boolean(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}
func (e *encoder) str(v string) {
	e.uvarint(uint64(len(v)))
	e.buf = append(e.buf, v...)
}
func (e *encoder) id(v [16]byte) { e.buf = append(e.buf, v[:]...) }
func (e *encoder) strs(vs []string) {
	e.uvarint(uint64(len(vs)))
	for _, v := range vs {
		e.str(v)
	}
}
func (e *encoder) sessions(vs []SessionID) {
	e.uvarint(uint64(len(vs)))
	for _, v := range vs {
		e.id(v)
	}
}

// decoder reads from a byte slice. After the first error every read returns
// a zero value and the error sticks; callers check err once at the end.
type decoder struct {
	data []byte
	off  int
	err  error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("at byte %d: %s", d.off, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) remaining() int { return len(d.data) - d.off }

func (d *decoder) u8() uint8 {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 1 {
		d.fail("%v", errShort)
		return 0
	}
	v := d.data[d.off]
	d.off++
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.data[d.off:])
	if n <= 0 {
		if n == 0 {
			d.fail("%v", errShort)
		} else {
			d.fail("varint overflows 64 bits")
		}
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) boolean() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("invalid boolean")
	return false
}

// length reads a count of items that each take at least minItem bytes, and
// refuses counts the remaining data cannot hold, so a corrupt count never
// causes a large allocation.
func (d *decoder) length(minItem int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(d.remaining()/minItem) {
		d.fail("length %d exceeds the %d bytes left", n, d.remaining())
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.length(1)
	if d.err != nil {
		return ""
	}
	v := string(d.data[d.off : d.off+n])
	d.off += n
	return v
}

func (d *decoder) id() (v [16]byte) {
	if d.err != nil {
		return v
	}
	if d.remaining() < 16 {
		d.fail("%v", errShort)
		return v
	}
	copy(v[:], d.data[d.off:d.off+16])
	d.off += 16
	return v
}

func (d *decoder) strs() []string {
	n := d.length(1)
	if n == 0 {
		return nil
	}
	out := make([]string, n)
	for i := range out {
		out[i] = d.str()
	}
	return out
}

func (d *decoder) sessions() []SessionID {
	n := d.length(16)
	if n == 0 {
		return nil
	}
	out := make([]SessionID, n)
	for i := range out {
		out[i] = d.id()
	}
	return out
}

// present reads an optional field's presence byte.
func (d *decoder) present() bool { return d.boolean() }

// end fails unless every byte was consumed.
func (d *decoder) end() {
	if d.err == nil && d.remaining() != 0 {
		d.fail("%d trailing bytes", d.remaining())
	}
}

package fsm

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/reconf/reconf/snapshot"
)

// The state's canonical encoding: the same bytes feed FSM snapshots (inside
// the snapshot container) and the state digest. Each section is a stream of
// records, each record a uvarint length and a codec-encoded body; large
// collections are split into records of at most recordItems items, so the
// split is itself canonical. Every collection is written in key order.

// StateFormat is the version of the section layout below; it is written in
// the meta section and restore refuses any other.
const StateFormat = 1

const (
	recordItems = 4096
	maxRecord   = 256 << 20
)

// sections in the order they are written and must be read. The first
// eight are in every snapshot; boundedSections follow them only in a state
// in bounded mode (retention.go), so a legacy state's snapshot and digest
// are byte for byte those of the release before, and a snapshot that ends
// after "requests" restores as a legacy state.
var sections = [...]string{"meta", "bundles", "upgrades", "authorities", "footprints", "live", "facts", "requests",
	"bounded", "consumers", "request_times"}

// requiredSections is how many of sections every snapshot has.
const requiredSections = 8

// ErrInvalidState is returned by restore for a snapshot whose container is
// sound but whose content is not a valid state.
var ErrInvalidState = errors.New("invalid state in snapshot")

type sectionSink interface {
	Section(name string) (io.WriteCloser, error)
}

// recordWriter frames records into a section.
type recordWriter struct {
	w   *bufio.Writer
	enc encoder
	err error
}

func (rw *recordWriter) flushRecord() {
	if rw.err != nil {
		rw.enc.buf = rw.enc.buf[:0]
		return
	}
	var n [binary.MaxVarintLen64]byte
	if _, err := rw.w.Write(n[:binary.PutUvarint(n[:], uint64(len(rw.enc.buf)))]); err != nil {
		rw.err = err
	} else if _, err := rw.w.Write(rw.enc.buf); err != nil {
		rw.err = err
	}
	rw.enc.buf = rw.enc.buf[:0]
}

// writeSections streams the whole state into sink, one section at a time.
//
// The digest leaves out the applied index (see Digest); snapshots keep it.
func (s *State) writeSections(sink sectionSink) error {
	_, digest := sink.(digestSink)
	for i, name := range sections {
		if i >= requiredSections && !s.bounded {
			break
		}
		sec, err := sink.Section(name)
		if err != nil {
			return err
		}
		rw := &recordWriter{w: bufio.NewWriterSize(sec, 64<<10)}
		s.writeSection(name, rw, digest)
		if rw.err == nil {
			rw.err = rw.w.Flush()
		}
		if err := sec.Close(); rw.err == nil {
			rw.err = err
		}
		if rw.err != nil {
			return fmt.Errorf("writing section %s: %w", name, rw.err)
		}
	}
	return nil
}

func (s *State) writeSection(name string, rw *recordWriter, digest bool) {
	e := &rw.enc
	switch name {
	case "meta":
		e.uvarint(StateFormat)
		if !digest {
			e.uvarint(s.applied)
		}
		e.boolean(s.reconfiguration)
		e.uvarint(s.requestSeq)
		rw.flushRecord()
	case "bundles":
		s.bundles.Ascend(func(b bundleEntry) bool {
			e.bundle(b.bundle)
			e.uvarint(b.upgrade.Epoch)
			e.strs(b.upgrade.ActiveMembers)
			e.uvarint(uint64(len(b.upgrade.Executions)))
			rw.flushRecord()
			return rw.err == nil
		})
	case "upgrades":
		// One record per execution: a long history never makes one record
		// too large to restore.
		s.bundles.Ascend(func(b bundleEntry) bool {
			for i := range b.upgrade.Executions {
				e.str(b.bundle.ID)
				e.execution(&b.upgrade.Executions[i])
				rw.flushRecord()
			}
			return rw.err == nil
		})
	case "authorities":
		batch(rw, func(each func() bool) {
			s.authorities.Ascend(func(a AuthorityID) bool {
				e.id(a)
				return each()
			})
		})
	case "footprints":
		batch(rw, func(each func() bool) {
			s.footprints.Ascend(func(it footprintItem) bool {
				e.id(it.auth)
				e.id(it.sess)
				e.u8(uint8(it.class))
				return each()
			})
		})
	case "live":
		s.live.Ascend(func(l *LiveSession) bool {
			e.liveSession(l)
			rw.flushRecord()
			return rw.err == nil
		})
	case "facts":
		batch(rw, func(each func() bool) {
			s.eachFact(func(f *Fact) bool {
				e.fact(f)
				return each()
			})
		})
	case "requests":
		s.requestQ.each(func(r *requestEntry) bool {
			e.str(r.id)
			e.uvarint(r.seq)
			e.buf = append(e.buf, r.res...) // the result, as encodeResult wrote it
			rw.flushRecord()
			return rw.err == nil
		})
	case "bounded":
		p := &s.policy
		e.retention(p)
		e.uvarint(s.clock)
		e.uvarint(s.factBase)
		e.uvarint(s.factsLost)
		e.uvarint(s.evictedEarly)
		e.uvarint(s.lastEarlyStamp)
		rw.flushRecord()
	case "consumers":
		batch(rw, func(each func() bool) {
			s.consumers.Ascend(func(c Consumer) bool {
				e.str(c.Name)
				e.uvarint(c.Cursor)
				return each()
			})
		})
	case "request_times":
		// Each entry's stamp, in table order: its own or the mark's that
		// dates it, 0 for the newest ids no stamp dates yet.
		marks := s.reqMarks
		slot := s.requestQ.lo
		batch(rw, func(each func() bool) {
			s.requestQ.each(func(r *requestEntry) bool {
				for len(marks) > 0 && marks[0].slot <= slot {
					marks = marks[1:]
				}
				at := r.at
				if at == 0 && len(marks) > 0 {
					at = marks[0].at
				}
				slot++
				e.uvarint(at)
				return each()
			})
		})
	}
}

// batch writes items recordItems to a record: a record's body is its items
// back to back. iterate encodes an item, then calls each.
func batch(rw *recordWriter, iterate func(each func() bool)) {
	n := 0
	iterate(func() bool {
		n++
		if n == recordItems {
			rw.flushRecord()
			n = 0
		}
		return rw.err == nil
	})
	if n > 0 {
		rw.flushRecord()
	}
}

// Snapshot writes the state as a snapshot container to w.
func (s *State) Snapshot(w io.Writer, term uint64) error {
	sw, err := snapshot.NewWriter(w, snapshot.Header{Index: s.applied, Term: term})
	if err != nil {
		return err
	}
	if err := s.writeSections(sw); err != nil {
		return err
	}
	return sw.Close()
}

// digestSink hashes section names and data in order.
type digestSink struct{ h io.Writer }

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func (d digestSink) Section(name string) (io.WriteCloser, error) {
	fmt.Fprintf(d.h, "%d:%s", len(name), name)
	return nopCloser{d.h}, nil
}

// Digest is a SHA-256 over the canonical encoding of the whole state except
// the applied index: two replicas at the same applied index must have the
// same digest (domain 9.2), and a backup restored into another cluster, where
// the log positions differ, has the digest of the state it was taken from.
// Callers report the index beside the digest.
func (s *State) Digest() [32]byte {
	h := sha256.New()
	_ = s.writeSections(digestSink{h}) // a hash never fails to write
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// Restore reads a snapshot container written by Snapshot and returns the
// state it holds. It validates everything (container checksums, section
// layout, ordering and content) before returning, so a caller that swaps
// the result in never adopts a damaged state; on error the caller's state is
// untouched because nothing here refers to it.
func Restore(r io.Reader) (*State, snapshot.Header, error) {
	sr, err := snapshot.NewReader(r)
	if err != nil {
		return nil, snapshot.Header{}, err
	}
	st := newEmptyState()
	pending := map[string]int{} // executions each bundle's record announced
	for i, want := range sections {
		name, sec, err := sr.Next()
		if err == io.EOF && i == requiredSections {
			break // a legacy state (retention.go)
		}
		if err == io.EOF {
			return nil, sr.Header(), fmt.Errorf("%w: section %s is missing", ErrInvalidState, want)
		}
		if err != nil {
			return nil, sr.Header(), err
		}
		if name != want {
			return nil, sr.Header(), fmt.Errorf("%w: section %s where %s was expected", ErrInvalidState, name, want)
		}
		if err := st.readSection(name, bufio.NewReaderSize(sec, 64<<10), pending); err != nil {
			return nil, sr.Header(), fmt.Errorf("section %s: %w", name, err)
		}
	}
	if name, _, err := sr.Next(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%w: unexpected section %s", ErrInvalidState, name)
		}
		return nil, sr.Header(), err
	}
	if err := st.checkBounded(); err != nil {
		return nil, sr.Header(), fmt.Errorf("%w: %v", ErrInvalidState, err)
	}
	if h := sr.Header(); h.Index != st.applied {
		return nil, h, fmt.Errorf("%w: header index %d but state applied index %d", ErrInvalidState, h.Index, st.applied)
	}
	st.rebuildIndexes()
	return st, sr.Header(), nil
}

// readRecords calls fn with a decoder over each record of a section.
func readRecords(br *bufio.Reader, fn func(d *decoder) error) error {
	var buf bytes.Buffer
	for i := 0; ; i++ {
		n, err := binary.ReadUvarint(br)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("record %d length: %w", i, err)
		}
		if n > maxRecord {
			return fmt.Errorf("%w: record %d is %d bytes; the limit is %d", ErrInvalidState, i, n, maxRecord)
		}
		buf.Reset()
		// CopyN grows the buffer only as data arrives, so a corrupt length
		// cannot force a large allocation.
		if _, err := io.CopyN(&buf, br, int64(n)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("record %d: %w", i, err)
		}
		d := &decoder{data: buf.Bytes()}
		if err := fn(d); err != nil {
			return fmt.Errorf("%w: record %d: %v", ErrInvalidState, i, err)
		}
		d.end()
		if d.err != nil {
			return fmt.Errorf("%w: record %d: %v", ErrInvalidState, i, d.err)
		}
	}
}

// untilEnd decodes items until the record is used up.
func untilEnd(d *decoder, item func() error) error {
	for d.err == nil && d.remaining() > 0 {
		if err := item(); err != nil {
			return err
		}
	}
	return d.err
}

func (s *State) readSection(name string, br *bufio.Reader, pending map[string]int) error {
	switch name {
	case "meta":
		records := 0
		return readRecords(br, func(d *decoder) error {
			if records++; records > 1 {
				return errors.New("more than one meta record")
			}
			if f := d.uvarint(); d.err == nil && f != StateFormat {
				return fmt.Errorf("state format %d; this node reads %d", f, StateFormat)
			}
			s.applied, s.reconfiguration, s.requestSeq = d.uvarint(), d.boolean(), d.uvarint()
			return d.err
		})
	case "bundles":
		var last string
		return readRecords(br, func(d *decoder) error {
			b := d.bundle()
			up := &UpgradeSnapshot{Epoch: d.uvarint(), ActiveMembers: d.strs()}
			n := d.uvarint()
			if d.err != nil {
				return d.err
			}
			if n > MaxUpgradeHistory || n > up.Epoch {
				return fmt.Errorf("bundle %q announces %d executions at epoch %d", b.ID, n, up.Epoch)
			}
			pending[b.ID] = int(n)
			if s.bundles.Len() > 0 && b.ID <= last {
				return fmt.Errorf("bundle %q out of order", b.ID)
			}
			last = b.ID
			if err := checkStoredBundle(b, up); err != nil {
				return fmt.Errorf("bundle %q: %v", b.ID, err)
			}
			s.bundles.ReplaceOrInsert(newBundleEntry(b, up))
			return nil
		})
	case "upgrades":
		var last string
		err := readRecords(br, func(d *decoder) error {
			id, x := d.str(), d.execution()
			if d.err != nil {
				return d.err
			}
			e, ok := s.lookupBundle(id)
			switch {
			case !ok:
				return fmt.Errorf("execution for unknown bundle %q", id)
			case id < last:
				return fmt.Errorf("execution for bundle %q out of order", id)
			case pending[id] == 0:
				return fmt.Errorf("more executions for bundle %q than announced", id)
			}
			last = id
			pending[id]--
			e.upgrade.Executions = append(e.upgrade.Executions, *x)
			return nil
		})
		if err != nil {
			return err
		}
		for id, n := range pending {
			if n != 0 {
				return fmt.Errorf("%w: bundle %q is missing %d executions", ErrInvalidState, id, n)
			}
		}
		return nil
	case "authorities":
		var last AuthorityID
		return readRecords(br, func(d *decoder) error {
			return untilEnd(d, func() error {
				a := AuthorityID(d.id())
				if s.authorities.Len() > 0 && compareAuthority(a, last) <= 0 {
					return fmt.Errorf("authority %s out of order", a)
				}
				last = a
				s.authorities.ReplaceOrInsert(a)
				return nil
			})
		})
	case "footprints":
		var last footprintItem
		return readRecords(br, func(d *decoder) error {
			return untilEnd(d, func() error {
				it := footprintItem{auth: d.id(), sess: d.id(), class: Class(d.u8())}
				if d.err != nil {
					return d.err
				}
				if s.footprints.Len() > 0 && !lessFootprint(last, it) {
					return fmt.Errorf("footprint entry %s/%s out of order", it.auth, it.sess)
				}
				if it.class.String() == "invalid" {
					return fmt.Errorf("footprint entry %s/%s has class %d", it.auth, it.sess, it.class)
				}
				if !s.authorities.Has(it.auth) {
					return fmt.Errorf("footprint entry names unlisted authority %s", it.auth)
				}
				last = it
				s.footprints.ReplaceOrInsert(it)
				return nil
			})
		})
	case "live":
		var last SessionID
		return readRecords(br, func(d *decoder) error {
			l := d.liveSession()
			if d.err != nil {
				return d.err
			}
			if s.live.Len() > 0 && compareSession(l.Session, last) <= 0 {
				return fmt.Errorf("live session %s out of order", l.Session)
			}
			last = l.Session
			if l.Generation == 0 || checkName("owner_label", l.OwnerLabel) != nil {
				return fmt.Errorf("live session %s has an invalid owner", l.Session)
			}
			s.live.ReplaceOrInsert(l)
			return nil
		})
	case "facts":
		return readRecords(br, func(d *decoder) error {
			return untilEnd(d, func() error {
				f := d.fact()
				if d.err == nil && s.factCount() == 0 && f.Seq > 1 {
					// The journal was trimmed: it starts at a chunk
					// boundary, which the bounded section confirms.
					if (f.Seq-1)%factChunk != 0 {
						return fmt.Errorf("first fact sequence %d is not after a whole number of chunks", f.Seq)
					}
					s.factBase = f.Seq - 1
				}
				if d.err == nil && f.Seq != uint64(s.factCount())+1 {
					return fmt.Errorf("fact sequence %d where %d was expected", f.Seq, s.factCount()+1)
				}
				s.appendFact(f)
				return nil
			})
		})
	case "requests":
		var last uint64
		return readRecords(br, func(d *decoder) error {
			id, seq := d.str(), d.uvarint()
			start := d.off
			d.result()
			if d.err != nil {
				return d.err
			}
			e := newRequestEntry(id, seq, bytes.Clone(d.data[start:d.off]))
			switch {
			case e.seq <= last || e.seq > s.requestSeq:
				return fmt.Errorf("request %q has sequence %d out of order", e.id, e.seq)
			case CheckRequestID(e.id) != nil || e.id == "":
				return fmt.Errorf("invalid request id %q", e.id)
			case s.hasRequest(e.id, e.hash):
				return fmt.Errorf("request id %q appears twice", e.id)
			case s.requests.Len() >= MaxRequestIDs && s.requestBytes > MaxRequestIDBudget:
				return fmt.Errorf("request ids exceed %d bytes", uint64(MaxRequestIDBudget))
			}
			last = e.seq
			s.addRequest(e)
			return nil
		})
	}
	return s.readBoundedSection(name, br)
}

// checkStoredBundle holds a restored bundle to what registration stores.
func checkStoredBundle(b *Bundle, up *UpgradeSnapshot) error {
	if err := Check(&RegisterBundle{Bundle: *b}); err != nil {
		return err
	}
	f := &b.Footprint
	canonical := b.Footprint.SchemaVersion == SchemaVersion &&
		slices.Equal(b.Exports, sortedSet(b.Exports)) && slices.Equal(b.Imports, sortedSet(b.Imports)) &&
		slices.Equal(f.Native, sortedSessions(f.Native)) && slices.Equal(f.DelegatedIn, sortedSessions(f.DelegatedIn)) &&
		slices.Equal(f.DelegatedOut, sortedSessions(f.DelegatedOut)) &&
		slices.Equal(up.ActiveMembers, canonicalMembers(up.ActiveMembers)) &&
		up.Epoch >= uint64(len(up.Executions))
	if !canonical {
		return errors.New("not in canonical form")
	}
	return nil
}

// rebuildIndexes derives the per-session index and the violation set from
// the footprints, which are the only stored form of ownership.
func (s *State) rebuildIndexes() {
	s.footprints.Ascend(func(it footprintItem) bool {
		s.holders.ReplaceOrInsert(holderItem{sess: it.sess, auth: it.auth, class: it.class})
		return true
	})
	var cur SessionID
	var group []holderItem
	flush := func() {
		if len(group) > 0 && !coherent(group) {
			s.violating.ReplaceOrInsert(cur)
		}
		group = group[:0]
	}
	s.holders.Ascend(func(h holderItem) bool {
		if h.sess != cur {
			flush()
			cur = h.sess
		}
		group = append(group, h)
		return true
	})
	flush()
}

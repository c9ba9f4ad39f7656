package fsm

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// Every single-bit flip anywhere in a format 2 entry is refused before any
// command is decoded.
func TestChecksumRefusesEveryFlippedBit(t *testing.T) {
	entry := EncodeEntry(fzCommands()...)
	if entry[0] != EntryFormatChecked {
		t.Fatalf("EncodeEntry wrote format %d", entry[0])
	}
	if _, err := DecodeEntry(entry); err != nil {
		t.Fatal(err)
	}
	for i := range entry {
		for bit := 0; bit < 8; bit++ {
			bad := append([]byte(nil), entry...)
			bad[i] ^= 1 << bit
			dec, err := DecodeEntry(bad)
			if err == nil || !errors.Is(err, ErrMalformedEntry) || dec != nil {
				t.Fatalf("byte %d bit %d flipped: decoded %d commands, err %v", i, bit, len(dec), err)
			}
			if i > 0 && !errors.Is(err, ErrChecksum) {
				t.Fatalf("byte %d bit %d flipped: %v, want a checksum error", i, bit, err)
			}
		}
	}
}

// Entries written by earlier releases (format 1, no checksum) still decode
// and apply to the same state as the same commands in format 2.
func TestFormat1EntriesStillApply(t *testing.T) {
	var enc []EncodedCommand
	for _, c := range fzCommands() {
		enc = append(enc, EncodeCommand(c))
	}
	v1, v2 := JoinEntryFormat(EntryFormatUnchecked, enc), JoinEntryFormat(EntryFormatChecked, enc)
	if v1[0] != 1 || len(v2) != len(v1)+4 {
		t.Fatalf("format 1 is %d bytes starting % x, format 2 %d bytes", len(v1), v1[:2], len(v2))
	}
	a, b := New(), New()
	ra, rb := a.ApplyEntry(5, v1), b.ApplyEntry(5, v2)
	if len(ra) != len(enc) || len(rb) != len(enc) || a.Digest() != b.Digest() {
		t.Fatalf("format 1 and 2 applied differently: %d and %d results", len(ra), len(rb))
	}
}

func cmdLog(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// haltCase applies good entries 1 and 2, then bad, then a good entry 4,
// and checks the FSM halted at bad's index with want in the reason and
// changed nothing after entry 2.
func haltCase(t *testing.T, f *FSM, bad *raft.Log, want string) {
	t.Helper()
	a := rcAuth(1)
	good := func(i uint64) *raft.Log {
		return cmdLog(i, EncodeEntry(Command{Op: &ExtendFootprint{Authority: a, Session: rcSess(byte(i)), Class: Native}}))
	}
	for i := uint64(1); i <= 2; i++ {
		if r, ok := f.Apply(good(i)).([]Result); !ok || r[0].Err != nil {
			t.Fatalf("entry %d: %v", i, r)
		}
	}
	digest := f.View().Digest()
	resp := f.ApplyBatch([]*raft.Log{bad, good(bad.Index + 1)})
	for i, r := range resp {
		h, ok := r.(*HaltError)
		if !ok || h.Index != bad.Index || !strings.Contains(h.Error(), want) {
			t.Fatalf("response %d: %v, want a halt at %d saying %q", i, r, bad.Index, want)
		}
	}
	if f.Halted() == nil || f.AppliedIndex() != 2 || f.View().Digest() != digest {
		t.Fatalf("halted %v, applied %d: the state moved", f.Halted(), f.AppliedIndex())
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrHalted) {
		t.Fatalf("snapshot of a halted replica: %v", err)
	}
}

func TestFSMHaltsOnChecksumMismatch(t *testing.T) {
	data := EncodeEntry(Command{Op: &SetCapabilities{Reconfiguration: false}})
	data[len(data)-1] ^= 1
	haltCase(t, NewFSM(nil), cmdLog(3, data), "checksum does not match")
}

func TestFSMHaltsOnUnknownCommand(t *testing.T) {
	data := JoinEntry([]EncodedCommand{
		EncodeCommand(Command{Op: &SetCapabilities{Reconfiguration: false}}),
		{99, CommandVersion, 0, 0},
	})
	f := NewFSM(nil)
	haltCase(t, f, cmdLog(3, data), "unknown command type 99")
	var on bool
	f.Read(func(s *State) { on = s.Reconfiguration() })
	if !on {
		t.Fatal("the first command of the refused entry was applied")
	}
}

func TestFSMHaltsOnIndexGap(t *testing.T) {
	f := NewFSM(nil)
	f.SetGapCheck(func(first, last uint64) error {
		if first != 3 || last != 4 {
			t.Errorf("gap check of %d..%d, want 3..4", first, last)
		}
		return errors.New("entry 3 is a command")
	})
	haltCase(t, f, cmdLog(5, EncodeEntry(Command{Op: &SetCapabilities{}})), "entry 3 is a command")
}

func TestFSMHaltsOnRepeatedIndex(t *testing.T) {
	haltCase(t, NewFSM(nil), cmdLog(2, EncodeEntry(Command{Op: &SetCapabilities{}})), "entry 2 arrived after entry 2")
}

// A gap the check accepts (a leader's no-op) is applied over.
func TestFSMAppliesOverAcceptedGap(t *testing.T) {
	f := NewFSM(nil)
	f.SetGapCheck(func(first, last uint64) error { return nil })
	f.Apply(cmdLog(1, EncodeEntry(Command{Op: &SetCapabilities{}})))
	if r, ok := f.Apply(cmdLog(3, EncodeEntry(Command{Op: &SetCapabilities{Reconfiguration: true}}))).([]Result); !ok || r[0].Err != nil {
		t.Fatalf("over a no-op: %v", r)
	}
	if f.Halted() != nil || f.AppliedIndex() != 3 {
		t.Fatalf("halted %v applied %d", f.Halted(), f.AppliedIndex())
	}
}

// A restored backup (header index 0) takes the position of the snapshot
// Raft filed it under.
func TestRestoreUnpositioned(t *testing.T) {
	src := New()
	src.Apply(9, Command{Op: &SetCapabilities{Reconfiguration: false}})
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(src.Snapshot(pw, 4)) }()
	var buf strings.Builder
	if err := UnpositionSnapshot(pr, &buf); err != nil {
		t.Fatal(err)
	}
	f := NewFSM(nil)
	f.SetRestorePosition(func() (uint64, uint64, bool) { return 120, 7, true })
	if err := f.Restore(io.NopCloser(strings.NewReader(buf.String()))); err != nil {
		t.Fatal(err)
	}
	if f.AppliedIndex() != 120 || f.View().Digest() != src.Digest() {
		t.Fatalf("restored at %d", f.AppliedIndex())
	}
}

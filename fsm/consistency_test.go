package fsm

import (
	"bytes"
	"reflect"
	"testing"
)

// The check command is type 20 in the log format, with an empty payload.
func TestConsistencyCheckEncoding(t *testing.T) {
	data := EncodeEntry(Command{Op: &ConsistencyCheck{}})
	// format, crc32c, count, type, version, request id, payload length.
	want := []byte{1, byte(TypeConsistencyCheck), CommandVersion, 0, 0}
	if !bytes.Equal(data[5:], want) || TypeConsistencyCheck != 20 {
		t.Fatalf("encoded % x, want the body % x", data, want)
	}
	got, err := DecodeEntry(data)
	if err != nil || len(got) != 1 || got[0].Err != nil || !reflect.DeepEqual(got[0].Command.Op, &ConsistencyCheck{}) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	// A payload byte is not a check this node knows: a typed error, not a
	// panic nor a silent skip.
	bad := JoinEntryFormat(EntryFormatUnchecked, []EncodedCommand{{byte(TypeConsistencyCheck), CommandVersion, 0, 1, 7}})
	got, err = DecodeEntry(bad)
	if err != nil || len(got) != 1 || got[0].Err == nil || got[0].Err.Code != CodeUnknownCommand {
		t.Fatalf("check with a payload: %+v, %v", got, err)
	}
}

// Applying a check changes nothing but the applied index.
func TestConsistencyCheckChangesNoState(t *testing.T) {
	for _, st := range fzSeedStates(t) {
		before, index := st.Digest(), st.AppliedIndex()+1
		var buf bytes.Buffer
		if err := st.Clone().Snapshot(&buf, 1); err != nil {
			t.Fatal(err)
		}
		r := st.ApplyEntry(index, EncodeEntry(Command{Op: &ConsistencyCheck{}}))
		if len(r) != 1 || r[0].Err != nil || r[0].Index != index {
			t.Fatalf("check applied as %+v", r)
		}
		if st.Digest() != before || st.AppliedIndex() != index {
			t.Fatalf("a check changed the state (applied %d, want %d)", st.AppliedIndex(), index)
		}
	}
}

// The FSM hands the check hook a clone of the state after the whole entry
// (commands packed after the check included), and later entries do not
// change that clone.
func TestFSMCheckHookSeesStateAtTheEntry(t *testing.T) {
	f := NewFSM(nil)
	type seen struct {
		index uint64
		st    *State
	}
	var got []seen
	f.OnCheck(func(index uint64, st *State) { got = append(got, seen{index, st}) })
	a := rcAuth(1)
	ext := func(i byte) Command {
		return Command{Op: &ExtendFootprint{Authority: a, Session: rcSess(i), Class: Native}}
	}
	f.Apply(cmdLog(1, EncodeEntry(ext(1))))
	if len(got) != 0 {
		t.Fatalf("hook ran for an entry without a check: %d", len(got))
	}
	f.Apply(cmdLog(2, EncodeEntry(ext(2), Command{Op: &ConsistencyCheck{}}, ext(3))))
	atCheck := f.View().Digest()
	f.Apply(cmdLog(3, EncodeEntry(ext(4))))
	if len(got) != 1 || got[0].index != 2 {
		t.Fatalf("hook calls %+v, want one at index 2", got)
	}
	if got[0].st.AppliedIndex() != 2 || got[0].st.Digest() != atCheck {
		t.Fatal("the hook's clone is not the state as of the check entry")
	}
	if f.View().Digest() == atCheck {
		t.Fatal("entry 3 did not change the state: the test proves nothing")
	}
}

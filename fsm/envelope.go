package fsm

import (
	"errors"
	"fmt"
)

// A log entry carries one or more commands (leaders pack concurrent commands
// into one entry: group commit). Its binary form:
//
//	entry   = format(u8 = 1) count(uvarint, 1..MaxBatch) command*
//	        | format(u8 = 2) crc32c(u32) count(uvarint, 1..MaxBatch) command*
//	command = type(u8) version(u8) request_id(string) payload_len(uvarint) payload
//
// Format 2 (checksum.go) is format 1 with a CRC32C of the rest of the entry;
// both are read, and EncodeEntry writes format 2.
//
// Each command is framed by its length, so a command this node cannot decode
// (a newer type or version during a rolling upgrade) is rejected on its own,
// deterministically, with unknown_command, and the rest of the entry still
// applies. Nothing in this file panics on any input.
const (
	// EntryFormat is the newest entry format this node reads and writes.
	EntryFormat    = EntryFormatChecked
	CommandVersion = 1
	MaxBatch       = 65536
)

// ErrMalformedEntry is returned when an entry's framing cannot be read.
var ErrMalformedEntry = errors.New("malformed log entry")

// EncodeEntry encodes commands as one log entry, in format EntryFormat.
func EncodeEntry(cmds ...Command) []byte {
	enc := make([]EncodedCommand, len(cmds))
	for i, c := range cmds {
		enc[i] = EncodeCommand(c)
	}
	return JoinEntryFormat(EntryFormat, enc)
}

func (e *encoder) command(c Command) {
	e.u8(uint8(c.Op.Type()))
	e.u8(CommandVersion)
	e.str(c.RequestID)
	// Reserve the payload length after encoding it: encode into the same
	// buffer, then splice the length in front.
	start := len(e.buf)
	e.payload(c.Op)
	payload := len(e.buf) - start
	var lenBuf encoder
	lenBuf.uvarint(uint64(payload))
	e.buf = append(e.buf, lenBuf.buf...)
	copy(e.buf[start+len(lenBuf.buf):], e.buf[start:start+payload])
	copy(e.buf[start:], lenBuf.buf)
}

func (e *encoder) payload(op Op) {
	switch op := op.(type) {
	case *RegisterBundle:
		e.bundle(&op.Bundle)
	case *LinkBundles:
		e.str(op.Left)
		e.str(op.Right)
		e.str(op.LinkedID)
	case *ExtendFootprint:
		e.id(op.Authority)
		e.id(op.Session)
		e.u8(uint8(op.Class))
	case *RemoveFootprint:
		e.id(op.Authority)
		e.id(op.Session)
	case *Delegate:
		e.delegation(&op.Delegation)
	case *OpenSession:
		e.id(op.Session)
		e.str(op.OwnerLabel)
		e.str(op.BundleID)
	case *Handoff:
		e.id(op.Session)
		e.str(op.OwnerLabel)
		e.uvarint(op.Generation)
		e.str(op.NextOwnerLabel)
		e.delegation(&op.Transfer)
	case *SetCapabilities:
		e.boolean(op.Reconfiguration)
	case *SeedMembership:
		e.str(op.BundleID)
		e.strs(op.Members)
	case *ExecuteUpgrade:
		e.str(op.BundleID)
		e.upgradeRequest(&op.Request)
	case *ConsistencyCheck: // no payload
	default:
		e.boundedPayload(op) // retention.go's commands: bounded_codec.go
	}
}

// Decoded is one command read from an entry, or why it could not be read.
type Decoded struct {
	Command Command
	Err     *Error // unknown_command: the command is not applied
}

// DecodeEntry reads a log entry. A framing error (the entry as a whole is
// unreadable) returns ErrMalformedEntry; a command that is framed correctly
// but cannot be decoded comes back with its own Err.
//
// A format 2 entry whose checksum does not match returns an error wrapping
// ErrChecksum before any command is decoded.
func DecodeEntry(data []byte) ([]Decoded, error) {
	d := decoder{data: data}
	switch f := d.u8(); {
	case d.err != nil:
	case f == EntryFormatUnchecked:
	case f == EntryFormatChecked:
		rest, err := verifyChecksum(data)
		if err != nil {
			return nil, err
		}
		d = decoder{data: rest}
	default:
		return nil, fmt.Errorf("%w: entry format %d (this node reads %d and %d)", ErrMalformedEntry, f, EntryFormatUnchecked, EntryFormatChecked)
	}
	n := d.uvarint()
	if d.err == nil && (n == 0 || n > MaxBatch || n > uint64(d.remaining()/4)) {
		return nil, fmt.Errorf("%w: command count %d", ErrMalformedEntry, n)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEntry, d.err)
	}
	out := make([]Decoded, 0, n)
	for i := uint64(0); i < n; i++ {
		typ, version := Type(d.u8()), d.u8()
		reqID := d.str()
		size := d.length(1)
		if d.err != nil {
			return nil, fmt.Errorf("%w: command %d: %v", ErrMalformedEntry, i, d.err)
		}
		body := d.data[d.off : d.off+size]
		d.off += size
		op, err := decodePayload(typ, version, body)
		out = append(out, Decoded{Command: Command{RequestID: reqID, Op: op}, Err: err})
	}
	d.end()
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEntry, d.err)
	}
	return out, nil
}

func decodePayload(typ Type, version uint8, body []byte) (Op, *Error) {
	if version != CommandVersion || typ.String() == "unknown" {
		return nil, errorf(CodeUnknownCommand, "unknown command type %d version %d: this node cannot decode it (upgrade every voter first)", typ, version)
	}
	d := decoder{data: body}
	var op Op
	switch typ {
	case TypeRegisterBundle:
		op = &RegisterBundle{Bundle: *d.bundle()}
	case TypeLinkBundles:
		op = &LinkBundles{Left: d.str(), Right: d.str(), LinkedID: d.str()}
	case TypeExtendFootprint:
		op = &ExtendFootprint{Authority: d.id(), Session: d.id(), Class: Class(d.u8())}
	case TypeRemoveFootprint:
		op = &RemoveFootprint{Authority: d.id(), Session: d.id()}
	case TypeDelegate:
		op = &Delegate{Delegation: d.delegation()}
	case TypeOpenSession:
		op = &OpenSession{Session: d.id(), OwnerLabel: d.str(), BundleID: d.str()}
	case TypeHandoff:
		op = &Handoff{Session: d.id(), OwnerLabel: d.str(), Generation: d.uvarint(), NextOwnerLabel: d.str(), Transfer: d.delegation()}
	case TypeSetCapabilities:
		op = &SetCapabilities{Reconfiguration: d.boolean()}
	case TypeSeedMembership:
		op = &SeedMembership{BundleID: d.str(), Members: d.strs()}
	case TypeExecuteUpgrade:
		op = &ExecuteUpgrade{BundleID: d.str(), Request: *d.upgradeRequest()}
	case TypeConsistencyCheck:
		op = &ConsistencyCheck{} // any payload byte is trailing data: refused below
	default:
		op = d.boundedPayload(typ) // bounded_codec.go
	}
	d.end()
	if d.err != nil {
		return nil, errorf(CodeUnknownCommand, "cannot decode %s command: %v", typ, d.err)
	}
	return op, nil
}

// ApplyEntry decodes a log entry and applies each of its commands in order.
// It returns one result per command; an entry whose framing is unreadable
// yields a single unknown_command result and changes nothing but the
// applied index.
func (s *State) ApplyEntry(index uint64, data []byte) []Result {
	decoded, err := DecodeEntry(data)
	if err != nil {
		if index > s.applied {
			s.applied = index
		}
		return []Result{{Index: index, Err: errorf(CodeUnknownCommand, "%v", err)}}
	}
	results := make([]Result, len(decoded))
	for i, dc := range decoded {
		if dc.Err != nil {
			if index > s.applied {
				s.applied = index
			}
			results[i] = Result{Index: index, Err: dc.Err}
			continue
		}
		results[i] = s.Apply(index, dc.Command)
	}
	return results
}

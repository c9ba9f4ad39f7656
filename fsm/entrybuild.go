package fsm

// Building entries from commands encoded one by one. A leader packs the
// commands of many concurrent requests into one log entry (group commit);
// each request encodes its own command on its own goroutine (EncodeCommand),
// so the one goroutine that packs entries only concatenates bytes
// (JoinEntry). The result is byte for byte what EncodeEntry produces for the
// same commands.

// EncodedCommand is one command in its entry form (see envelope.go).
type EncodedCommand []byte

// EncodeCommand encodes one command as it appears inside an entry.
func EncodeCommand(c Command) EncodedCommand {
	e := encoder{buf: make([]byte, 0, 128)}
	e.command(c)
	return e.buf
}

// JoinEntry builds one log entry from encoded commands, in order, in format
// EntryFormat. It is EncodeEntry for commands that were encoded already.
func JoinEntry(cmds []EncodedCommand) []byte { return JoinEntryFormat(EntryFormat, cmds) }

// Package snapshot implements the on-disk container format for reconf's Raft
// FSM snapshots.
//
// The package knows nothing about the state machine. A snapshot is a small
// header carrying the Raft index and term, followed by named byte sections
// and an end record. Callers decide what goes into each section; this
// package only guarantees that what they read back is exactly what was
// written, or that they get an error.
//
// Snapshots can be far larger than memory, so both the Writer and the Reader
// stream: section data is cut into bounded chunks, every checksum is
// computed incrementally, and each side works with a fixed-size buffer
// whatever the size of the snapshot.
//
// # Format
//
// All integers are big-endian.
//
//	header (32 bytes):
//	  magic "RCNFSNAP"       8 bytes
//	  format version         u16 (= 1)
//	  flags                  u16 (= 0)
//	  raft index             u64
//	  raft term              u64
//	  CRC32C                 u32 of the preceding 28 bytes
//
//	each section:
//	  tag                    byte 'S'
//	  name length            u8 (1..64)
//	  name                   bytes from [a-z0-9._-]
//	  chunks, each:          u32 length (1..1 MiB), then that many data bytes
//	  terminator             u32 zero
//	  total data length      u64
//	  CRC32C of the data     u32
//
//	end:
//	  tag                    byte 'E'
//	  number of sections     u32
//	  SHA-256                32 bytes, over every byte of the file
//	                         preceding these 32 bytes
//
// Nothing may follow the end record. A file holds at most 1024 sections and
// section names are unique within it.
//
// The per-section CRC32C catches damage early, close to where it happened,
// and names the section involved. The whole-file SHA-256 is the final guard:
// it covers the header, the framing and the data, so a reader has only
// verified a snapshot once [Reader.Next] has returned [io.EOF].
package snapshot

package fsm

import (
	"fmt"
	"runtime"
	"testing"
)

// BenchmarkDelegateRequestID is BenchmarkDelegate/sessions=1000 with a
// fresh request id on every command and the request-id table full, so every
// op looks its id up, remembers its result and forgets the oldest one: what
// a live leader does for clients that send request ids.
func BenchmarkDelegateRequestID(b *testing.B) {
	const n = 1000
	var pp *pingPong[Command]
	var next uint64
	requestID := func(i uint64) string {
		// A client's UUID-shaped id, spread like a random one.
		h := i*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
		return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", uint32(h>>32), uint16(h>>16), uint16(h), uint16(i>>48), i&0xffffffffffff)
	}
	b.Run("table=full", func(b *testing.B) {
		if pp == nil {
			pp = delegatePingPong(b, n)
			for range MaxRequestIDs {
				pp.index++
				next++
				if r := pp.s.Apply(pp.index, Command{RequestID: requestID(next), Op: &SetCapabilities{Reconfiguration: true}}); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
			runtime.GC()
		}
		ids := make([]string, b.N)
		for i := range ids {
			next++
			ids[i] = requestID(next)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			cmd := pp.next()
			cmd.RequestID = ids[i]
			if r := pp.s.Apply(pp.index, cmd); r.Err != nil || r.Deduped {
				b.Fatal(r.Err)
			}
		}
	})
}

package transport

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// A connection a peer opened to forward a request, routed but not yet
// accepted when the port closes, must be closed with it: the peer then
// learns at once that its request went nowhere, instead of waiting out its
// timeout (a follower's forwarded write hung 30 s when its leader stopped).
func TestMuxCloseDropsQueuedConnections(t *testing.T) {
	for _, proto := range []byte{protoForward, protoRaft} {
		m, err := ListenMux(MuxConfig{Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := m.dial(ctx, m.Addr().String(), proto)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		queue := m.forwardConns
		if proto == protoRaft {
			queue = m.raftConns
		}
		for deadline := time.Now().Add(5 * time.Second); len(queue) == 0; {
			if time.Now().After(deadline) {
				t.Fatalf("protocol %q: the connection was never routed", proto)
			}
			time.Sleep(time.Millisecond)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("protocol %q: the queued connection stayed open after Close", proto)
		}
		conn.Close()
		if c, err := m.ForwardListener().Accept(); err == nil {
			c.Close()
			t.Fatal("Accept after Close returned a connection")
		}
	}
}

package cluster

import (
	"errors"
	"net"
	"time"
)

// ApplyRawForTest commits an arbitrary log entry, bypassing the encoder:
// for tests of what replicas do with entries they cannot decode.
func (n *Node) ApplyRawForTest(data []byte, timeout time.Duration) (any, error) {
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return nil, err
	}
	return f.Response(), nil
}

// BreakConfirmationsForTest makes every leadership confirmation round find
// no voter to ask, as when the followers run a release that does not speak
// the protocol: reads must fall back to the log.
func (n *Node) BreakConfirmationsForTest() {
	n.confirm.mu.Lock()
	n.confirm.dial = func(string, time.Duration) (net.Conn, error) { return nil, errors.New("broken for the test") }
	n.confirm.mu.Unlock()
}

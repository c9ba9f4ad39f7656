package cluster

import "time"

// ApplyRawForTest commits an arbitrary log entry, bypassing the encoder:
// for tests of what replicas do with entries they cannot decode.
func (n *Node) ApplyRawForTest(data []byte, timeout time.Duration) (any, error) {
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return nil, err
	}
	return f.Response(), nil
}

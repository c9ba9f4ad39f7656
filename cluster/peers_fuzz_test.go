package cluster_test

import (
	"bytes"
	"testing"

	"github.com/reconf/reconf/cluster"
)

// FuzzParsePeers: a peers.json is operator input; parsing never panics,
// and what it accepts is a usable configuration.
func FuzzParsePeers(f *testing.F) {
	f.Add([]byte(`[{"id":"n1","address":"10.0.0.1:8201"},{"id":"n2","address":"10.0.0.2:8201","non_voter":true}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"id":"n1","address":"a:1"},{"id":"n1","address":"b:1"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		peers, err := cluster.ParsePeers(bytes.NewReader(data))
		if err != nil {
			return
		}
		ids, addrs, voters := map[string]bool{}, map[string]bool{}, 0
		for _, p := range peers {
			if p.ID == "" || p.Address == "" || ids[p.ID] || addrs[p.Address] {
				t.Fatalf("accepted %+v", peers)
			}
			ids[p.ID], addrs[p.Address] = true, true
			if !p.NonVoter {
				voters++
			}
		}
		if voters == 0 {
			t.Fatalf("accepted a configuration without voters: %+v", peers)
		}
	})
}

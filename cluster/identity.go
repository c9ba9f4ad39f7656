package cluster

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A cluster id names one cluster for its whole life. The node that
// bootstraps a cluster makes one up and keeps it in its data dir
// (cluster-id); the leader hands it to every node that joins, which keeps it
// in its own data dir. A node whose data dir says it belongs to another
// cluster is refused when it asks to join (and refuses to talk to a cluster
// with another id at start), so a data dir copied from elsewhere, or a
// --join that points at the wrong cluster, fails loudly instead of mixing
// two clusters' state.

const clusterIDFile = "cluster-id"

// ErrClusterMismatch: a data dir and a cluster disagree about which cluster
// the node belongs to.
var ErrClusterMismatch = errors.New("cluster id mismatch")

func newClusterID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func readClusterID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, clusterIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cluster: read %s: %w", filepath.Join(dir, clusterIDFile), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// writeClusterID stores id atomically (temp file, sync, rename).
func writeClusterID(dir, id string) error {
	tmp, err := os.CreateTemp(dir, ".cluster-id-*")
	if err != nil {
		return diskError(dir, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(id + "\n"); err != nil {
		tmp.Close()
		return diskError(dir, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return diskError(dir, err)
	}
	if err := tmp.Close(); err != nil {
		return diskError(dir, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, clusterIDFile)); err != nil {
		return diskError(dir, err)
	}
	return nil
}

// ClusterID is the id of the cluster this node belongs to; empty when the
// node has not bootstrapped or joined one yet.
func (n *Node) ClusterID() string {
	n.clusterMu.Lock()
	defer n.clusterMu.Unlock()
	return n.clusterID
}

// AdoptClusterID records the cluster this node joined. It is a no-op when
// the node already has this id, and ErrClusterMismatch when it has another.
func (n *Node) AdoptClusterID(id string) error {
	if id == "" {
		return nil
	}
	n.clusterMu.Lock()
	defer n.clusterMu.Unlock()
	switch n.clusterID {
	case id:
		return nil
	case "":
		if err := writeClusterID(n.cfg.DataDir, id); err != nil {
			return err
		}
		n.clusterID = id
		return nil
	}
	return fmt.Errorf("%w: data dir %s belongs to cluster %s, not %s", ErrClusterMismatch, n.cfg.DataDir, n.clusterID, id)
}

// initClusterID loads the cluster id at start, making one for a cluster
// this node has just bootstrapped.
func (n *Node) initClusterID(bootstrapped bool) error {
	id, err := readClusterID(n.cfg.DataDir)
	if err != nil {
		return err
	}
	if id == "" && bootstrapped {
		id = newClusterID()
		if err := writeClusterID(n.cfg.DataDir, id); err != nil {
			return err
		}
	}
	n.clusterMu.Lock()
	n.clusterID = id
	n.clusterMu.Unlock()
	return nil
}

// Member returns the configuration's entry with this id, or the one at
// this Raft address, if any: what a join of (id, raftAddr) would replace.
func (n *Node) Member(id, raftAddr string) (byID, byAddr *Server, err error) {
	servers, err := n.Servers()
	if err != nil {
		return nil, nil, err
	}
	for i := range servers {
		s := &servers[i]
		if s.ID == id {
			byID = s
		}
		if s.RaftAddr == raftAddr {
			byAddr = s
		}
	}
	return byID, byAddr, nil
}

// DataDirClusterID is the cluster id kept in a data dir, empty if none: what
// the Raft port proves before the node opens (transport.Mux.SetClusterID),
// so that no connection is accepted on the node's behalf without it.
func DataDirClusterID(dir string) (string, error) { return readClusterID(dir) }

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// node is one Raft server with its stores and transport.
type node struct {
	id        raft.ServerID
	raft      *raft.Raft
	transport *raft.NetworkTransport
	closeLog  func() error
}

// stores opens the log and stable store kind ("bolt", "wal", "mem") in dir,
// plus a snapshot store, and a function that closes them.
func stores(kind, dir string, logger hclog.Logger) (raft.LogStore, raft.StableStore, raft.SnapshotStore, func() error, error) {
	switch kind {
	case "mem":
		s := raft.NewInmemStore()
		return s, s, raft.NewInmemSnapshotStore(), func() error { return nil }, nil
	case "bolt", "wal":
	default:
		return nil, nil, nil, nil, fmt.Errorf("--store %q: want bolt, wal or mem", kind)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, nil, nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, logger)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if kind == "bolt" {
		// As hraftd does: one bbolt file is both the log and the stable
		// store, synced on every append.
		b, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		return b, b, snaps, b.Close, nil
	}
	walDir := filepath.Join(dir, "wal")
	if err := os.MkdirAll(walDir, 0o750); err != nil {
		return nil, nil, nil, nil, err
	}
	// raft-wal v0.4.0's Close does not close a meta store it opened itself,
	// so hand it one and close both.
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithLogger(logger.Named("wal")), wal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, nil, nil, nil, err
	}
	return w, w, snaps, func() error { return errors.Join(w.Close(), meta.Close()) }, nil
}

// raftConfig is hashicorp/raft's default configuration with shorter
// timeouts, so that an election takes a fraction of a second.
func raftConfig(id raft.ServerID, timeout time.Duration, logger hclog.Logger) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = timeout
	c.ElectionTimeout = timeout
	c.LeaderLeaseTimeout = timeout / 2
	c.Logger = logger
	return c
}

// startNode opens the stores in dir and starts a Raft server listening on
// bindAddr ("127.0.0.1:0" picks a free port).
func startNode(id raft.ServerID, kind, dir, bindAddr string, timeout time.Duration, fsm raft.FSM, logger hclog.Logger) (*node, error) {
	logger = logger.Named(string(id))
	logs, stable, snaps, closeLog, err := stores(kind, dir, logger)
	if err != nil {
		return nil, err
	}
	tr, err := raft.NewTCPTransportWithLogger(bindAddr, nil, 3, 10*time.Second, logger.Named("net"))
	if err != nil {
		closeLog()
		return nil, err
	}
	r, err := raft.NewRaft(raftConfig(id, timeout, logger), fsm, logs, stable, snaps, tr)
	if err != nil {
		tr.Close()
		closeLog()
		return nil, err
	}
	return &node{id: id, raft: r, transport: tr, closeLog: closeLog}, nil
}

// stop shuts the server down and closes its transport and stores.
func (n *node) stop() error {
	return errors.Join(n.raft.Shutdown().Error(), n.transport.Close(), n.closeLog())
}

func newLogger(level string) (hclog.Logger, error) {
	l := hclog.LevelFromString(level)
	if l == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn, error or off", level)
	}
	return hclog.New(&hclog.LoggerOptions{Name: "refbench", Level: l, Output: os.Stderr}), nil
}

package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/reconf/reconf/fsm"
)

// Manual recovery of a cluster that lost its quorum (Consul's peers.json):
// with the majority of voters gone for good, no leader can be elected and no
// membership change can be committed. The operator stops the surviving
// nodes, writes the configuration they should form into a peers.json file,
// and runs `reconfd recover` with it on each of them (the same file on
// every one), then starts them again. Raft then sees that configuration as
// committed and elects a leader among them. Entries that were committed by
// the lost majority but never reached a survivor are lost: recovery trades
// them for availability, which is why it is manual.

// Peer is one entry of a peers.json file, in hashicorp/raft's format.
type Peer struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	NonVoter bool   `json:"non_voter,omitempty"`
}

// ParsePeers reads a peers.json: a JSON array of {"id", "address",
// "non_voter"?}, at least one voter, no id or address twice.
func ParsePeers(r io.Reader) ([]Peer, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var peers []Peer
	if err := dec.Decode(&peers); err != nil {
		return nil, fmt.Errorf(`peers file: want a JSON array of {"id": ..., "address": "host:port", "non_voter": false}: %v`, err)
	}
	if dec.More() {
		return nil, errors.New("peers file: unexpected data after the JSON array")
	}
	if len(peers) == 0 {
		return nil, errors.New("peers file: no peers")
	}
	ids, addrs, voters := map[string]bool{}, map[string]bool{}, 0
	for i, p := range peers {
		switch {
		case p.ID == "":
			return nil, fmt.Errorf("peers file: entry %d: id is empty", i)
		case p.Address == "":
			return nil, fmt.Errorf("peers file: entry %d (%s): address is empty", i, p.ID)
		case ids[p.ID]:
			return nil, fmt.Errorf("peers file: id %s is listed twice", p.ID)
		case addrs[p.Address]:
			return nil, fmt.Errorf("peers file: address %s is listed twice", p.Address)
		}
		ids[p.ID], addrs[p.Address] = true, true
		if !p.NonVoter {
			voters++
		}
	}
	if voters == 0 {
		return nil, errors.New("peers file: no voter (at least one entry must have non_voter false)")
	}
	return peers, nil
}

// ReadPeersFile reads and checks a peers.json file.
func ReadPeersFile(path string) ([]Peer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePeers(bytes.NewReader(b))
}

// Recover rewrites the Raft configuration in a stopped node's data dir to
// peers. The node's own id (from the data dir) must be among them. It
// refuses a data dir without Raft state, and one a running node holds.
func Recover(dataDir string, peers []Peer, logger hclog.Logger) error {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "node-id"))
	if err != nil {
		return fmt.Errorf("recover: %s is not a reconf data dir: %w", dataDir, err)
	}
	id := string(trimNewline(b))
	conf := raft.Configuration{}
	self := false
	for _, p := range peers {
		suffrage := raft.Voter
		if p.NonVoter {
			suffrage = raft.Nonvoter
		}
		self = self || p.ID == id
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address), Suffrage: suffrage})
	}
	if !self {
		return fmt.Errorf("recover: this data dir belongs to node %q, which the peers file does not list; list every node you will start, and run recover on each of them", id)
	}
	if err := checkWritable(dataDir); err != nil {
		return err
	}
	store, err := openLogStore(dataDir, "", logger) // bolt or wal, whichever the dir holds
	if err != nil {
		return err
	}
	defer store.Close()
	snaps, err := openSnapshots(dataDir, logger)
	if err != nil {
		return err
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(id)
	rc.Logger = logger.Named("raft")
	_, trans := raft.NewInmemTransport(raft.ServerAddress(id))
	// The FSM only replays the state to write a snapshot that carries the
	// new configuration; the running node restores it as usual.
	if err := raft.RecoverCluster(rc, fsm.NewFSM(logger.Named("fsm")), store, store, snaps, trans, conf); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	logger.Info("recovered the Raft configuration", "data_dir", dataDir, "id", id, "peers", len(peers))
	return nil
}

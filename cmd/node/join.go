package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/transport"
)

// joinCluster asks the given members to add this node until one accepts,
// and keeps the cluster id the leader hands back in the data dir. A node
// already in its configuration (a restart) does not join again; it checks
// that the members it was pointed at are its cluster. fail is called with
// answers no retry can change: a data dir from another cluster, a live
// member with this node's id, refused credentials.
func joinCluster(ctx context.Context, logger hclog.Logger, node *cluster.Node, sec *security, addrs []string, raftAddr string, voter bool, fail func(error)) {
	client := sec.client(addrs)
	if servers, err := node.Servers(); err == nil {
		for _, s := range servers {
			if s.ID == node.ID() {
				logger.Info("already a member; not joining again")
				checkSameCluster(ctx, logger, node, client, addrs, fail)
				return
			}
		}
	}
	req := transport.JoinRequest{ID: node.ID(), RaftAddr: raftAddr, Voter: &voter, ClusterID: node.ClusterID()}
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		resp, err := client.JoinCluster(cctx, req)
		cancel()
		if err == nil {
			if err := node.AdoptClusterID(resp.ClusterID); err != nil {
				fail(fmt.Errorf("joined, but: %w", err))
				return
			}
			logger.Info("joined the cluster", "via", addrs, "cluster_id", resp.ClusterID)
			return
		}
		if transport.IsFatalJoinError(err) {
			fail(fmt.Errorf("join refused by the cluster at %v: %w", addrs, err))
			return
		}
		logger.Warn("join failed; retrying", "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// checkSameCluster compares this node's cluster id with the one of the
// first member that answers.
func checkSameCluster(ctx context.Context, logger hclog.Logger, node *cluster.Node, client *transport.Client, addrs []string, fail func(error)) {
	mine := node.ClusterID()
	if mine == "" {
		return
	}
	for _, addr := range addrs {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		info, err := client.NodeInfo(cctx, addr)
		cancel()
		if err != nil {
			continue
		}
		if info.ClusterID != "" && info.ClusterID != mine {
			fail(fmt.Errorf("%w: this node's data dir belongs to cluster %s, but --join %s is a member of cluster %s: "+
				"point --join at this node's own cluster, or move the data dir away to join that one", cluster.ErrClusterMismatch, mine, addr, info.ClusterID))
		}
		return
	}
	logger.Debug("no --join member answered; cluster id not checked")
}

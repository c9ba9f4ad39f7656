package transport

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/reconf/reconf/cluster"
	"github.com/reconf/reconf/fsm"
)

// Codes of the checks in this file and gate.go.
const (
	// CodeUpgradeInProgress (503): not every member decodes this command yet.
	CodeUpgradeInProgress = "upgrade_in_progress"
	// CodeClusterMismatch (409): the joining node's data dir belongs to
	// another cluster.
	CodeClusterMismatch = "cluster_mismatch"
	// CodeMemberConflict (409): another live member has the joining node's
	// id (or Raft address).
	CodeMemberConflict = "member_conflict"
)

// codedError is an operation's error with its API code.
type codedError struct{ code, msg string }

func (e *codedError) Error() string { return e.code + ": " + e.msg }

// JoinResponse answers POST /v1/cluster/join.
type JoinResponse struct {
	Joined    string `json:"joined"`
	ClusterID string `json:"cluster_id,omitempty"`
}

// JoinCluster asks the cluster to add a node and returns the cluster's id,
// which the node keeps in its data dir.
func (c *Client) JoinCluster(ctx context.Context, req JoinRequest) (*JoinResponse, error) {
	var out JoinResponse
	return &out, c.call(ctx, http.MethodPost, "/v1/cluster/join", req, &out)
}

// NodeInfo asks one node (no retries) who it is: its id, addresses, state,
// cluster id and what commands it decodes.
func (c *Client) NodeInfo(ctx context.Context, addr string) (*NodeJSON, error) {
	var out NodeJSON
	return &out, c.CallAt(ctx, addr, http.MethodGet, "/v1/internal/node", nil, &out)
}

// join adds a node on the leader. Two nodes must never share an id: a join
// whose id is already a member at another Raft address (or whose address is
// already a member's under another id) replaces that member only when the
// member does not answer on its address as itself, or when the request says
// replace. A live member is never silently replaced. This is Consul's rule
// for a new server with a known node id: refused while the old one is
// alive, taken over once it has failed.
func (s *Server) join(ctx context.Context, r *http.Request, req *JoinRequest) (any, error) {
	if err := checkNodeID("id", req.ID); err != nil {
		return nil, err
	}
	if err := checkRaftAddr("raft_addr", req.RaftAddr); err != nil {
		return nil, err
	}
	mine := s.node.ClusterID()
	if req.ClusterID != "" && mine != "" && req.ClusterID != mine {
		return nil, &codedError{CodeClusterMismatch, "node " + req.ID + "'s data dir belongs to cluster " + req.ClusterID +
			", and this is cluster " + mine + ": a data dir from another cluster cannot join. Start the node on an empty --data-dir (move the old one away) to join this cluster"}
	}
	voter := req.Voter == nil || *req.Voter
	byID, byAddr, err := s.node.Member(req.ID, req.RaftAddr)
	if err != nil {
		return nil, err
	}
	for _, old := range []*cluster.Server{byID, byAddr} {
		if old == nil || (old.ID == req.ID && old.RaftAddr == req.RaftAddr) {
			continue
		}
		if req.Replace {
			s.logger.Warn("join replaces a member on request", "old_id", old.ID, "old_raft_addr", old.RaftAddr, "id", req.ID, "raft_addr", req.RaftAddr)
			continue
		}
		if s.memberAlive(ctx, old) {
			what := "node id " + old.ID + " is already a member at " + old.RaftAddr
			if old.ID != req.ID {
				what = "Raft address " + old.RaftAddr + " is already member " + old.ID + "'s"
			}
			return nil, &codedError{CodeMemberConflict, what + ", and that member is alive: a second node with the same id or address would replace it. " +
				"Give the new node its own --id and address, or remove the old member first (reconfctl cluster remove " + old.ID +
				"), or join with replace (reconfctl cluster join --replace) if the old one is really gone"}
		}
		s.logger.Warn("join replaces a member that does not answer", "old_id", old.ID, "old_raft_addr", old.RaftAddr, "id", req.ID, "raft_addr", req.RaftAddr)
	}
	if err := s.node.Join(ctx, req.ID, req.RaftAddr, voter); err != nil {
		return nil, err
	}
	s.gate.invalidate()
	s.logger.Info("join accepted", "id", req.ID, "raft_addr", req.RaftAddr, "voter", voter, "principal", PrincipalFrom(r.Context()).String())
	return JoinResponse{Joined: req.ID, ClusterID: mine}, nil
}

// memberAlive: the member answers on its Raft address, as itself.
func (s *Server) memberAlive(ctx context.Context, m *cluster.Server) bool {
	if m.ID == s.node.ID() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := s.peerInfo(ctx, m.RaftAddr)
	if err != nil {
		s.logger.Debug("member does not answer", "id", m.ID, "raft_addr", m.RaftAddr, "error", err)
		return false
	}
	return info.ID == m.ID
}

// IsFatalJoinError: a join answer that retrying cannot change.
func IsFatalJoinError(err error) bool {
	return IsCode(err, CodeClusterMismatch) || IsCode(err, CodeMemberConflict) ||
		IsCode(err, CodeUnauthorized) || IsCode(err, CodeForbidden) || IsCode(err, string(fsm.CodeInvalidArgument)) ||
		errors.Is(err, cluster.ErrClusterMismatch)
}

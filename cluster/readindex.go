package cluster

// Linearizable reads (Raft §6.4 read index), without trusting
// raft.VerifyLeader.
//
// hashicorp/raft v1.7.3 counts, towards a VerifyLeader, any positive
// AppendEntries reply that its replication goroutines process after the
// verification was registered, whenever the request was sent. A leader that
// was paused (SIGSTOP, a long GC, a stalled VM) finds the replies to the
// requests it sent before the pause still in its sockets when it resumes,
// and they confirm it although a newer leader has committed writes since:
// the stale read of the 2026-12-03 jepsen sweep (readindex_test.go shows
// the library doing it with its in-memory transport).
//
// So a leader confirms itself with evidence that can only come from after
// the read arrived, as etcd's read index does: a confirmation round of our
// own on the Raft port. Each round carries a fresh nonce and the leader's
// term; a voter answers yes only if it is a follower in that term and
// follows this leader, and the leader counts only answers that echo the
// round's nonce. A voter that is in that term now has voted in no later
// election, so a majority of yeses means no newer leader existed when they
// were given. Concurrent reads share one round; reads that arrive while a
// round is in flight wait for the next one, because the commit index a round
// serves must be noted after its reads arrived.
//
// A round that gets too few answers (peers down, or running a version that
// does not speak the protocol) falls back to a log round, an empty command
// committed through Raft: an entry appended in this term after the read
// arrived can only be committed by replies to requests that carry it, so
// stale replies cannot commit it.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// A confirmation request is nonce(8) term(8) leader-id-length(1) leader-id;
// the answer is nonce(8) term(8) verdict(1), all integers big-endian.
const (
	confirmYes byte = 1
	confirmNo  byte = 0

	maxConfirmIDLen = 255
	confirmIdle     = 2 * time.Minute // a leader's idle confirmation connection is closed after this
)

// errUnconfirmed: a round got too few answers to decide either way.
var errUnconfirmed = errors.New("leadership not confirmed: too few voters answered")

type confirmRequest struct {
	nonce, term uint64
	leader      string
}

type confirmAnswer struct {
	nonce, term uint64
	yes         bool
}

func writeConfirmRequest(w io.Writer, r confirmRequest) error {
	if len(r.leader) > maxConfirmIDLen {
		return fmt.Errorf("leader id of %d bytes is longer than %d", len(r.leader), maxConfirmIDLen)
	}
	b := make([]byte, 17+len(r.leader))
	binary.BigEndian.PutUint64(b[0:], r.nonce)
	binary.BigEndian.PutUint64(b[8:], r.term)
	b[16] = byte(len(r.leader))
	copy(b[17:], r.leader)
	_, err := w.Write(b)
	return err
}

func readConfirmRequest(r io.Reader) (confirmRequest, error) {
	var h [17]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return confirmRequest{}, err
	}
	id := make([]byte, h[16])
	if _, err := io.ReadFull(r, id); err != nil {
		return confirmRequest{}, err
	}
	return confirmRequest{nonce: binary.BigEndian.Uint64(h[0:]), term: binary.BigEndian.Uint64(h[8:]), leader: string(id)}, nil
}

func writeConfirmAnswer(w io.Writer, a confirmAnswer) error {
	var b [17]byte
	binary.BigEndian.PutUint64(b[0:], a.nonce)
	binary.BigEndian.PutUint64(b[8:], a.term)
	if a.yes {
		b[16] = confirmYes
	}
	_, err := w.Write(b[:])
	return err
}

func readConfirmAnswer(r io.Reader) (confirmAnswer, error) {
	var b [17]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return confirmAnswer{}, err
	}
	if b[16] != confirmYes && b[16] != confirmNo {
		return confirmAnswer{}, fmt.Errorf("confirmation answer: verdict byte %d", b[16])
	}
	return confirmAnswer{nonce: binary.BigEndian.Uint64(b[0:]), term: binary.BigEndian.Uint64(b[8:]), yes: b[16] == confirmYes}, nil
}

// raftView is what a voter consults to answer a confirmation: its own
// state, term and leader.
type raftView interface {
	State() raft.RaftState
	CurrentTerm() uint64
	LeaderWithID() (raft.ServerAddress, raft.ServerID)
}

// answerConfirm decides one request: yes only from a follower in the
// request's term whose leader is the requester.
func answerConfirm(v raftView, req confirmRequest) confirmAnswer {
	term := v.CurrentTerm()
	_, leader := v.LeaderWithID()
	yes := v.State() == raft.Follower && term == req.term && string(leader) == req.leader
	// The term is read again: an answer must not pair a leader seen in a
	// later term with the earlier term.
	if v.CurrentTerm() != term {
		yes = false
	}
	return confirmAnswer{nonce: req.nonce, term: term, yes: yes}
}

// serveConfirm answers the requests of one confirmation connection until
// it breaks or stays idle.
func serveConfirm(v raftView, conn net.Conn) {
	defer conn.Close()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(confirmIdle))
		req, err := readConfirmRequest(conn)
		if err != nil {
			return
		}
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := writeConfirmAnswer(conn, answerConfirm(v, req)); err != nil {
			return
		}
	}
}

// confirmPeer is the leader's connection to one voter. One request is in
// flight on it at a time; a request whose answer does not arrive in time
// closes the connection, so no late answer is ever read as another's.
type confirmPeer struct {
	mu   sync.Mutex
	conn net.Conn
	// quietUntil: a peer that closed a fresh connection without answering
	// (a release that does not speak the protocol, during a rolling
	// upgrade) is not asked again before then, so the leader does not
	// dial it, and make it log an unknown RPC type, on every round.
	quietUntil time.Time
}

// confirmQuiet is how long a peer that hung up unanswered is left alone.
const confirmQuiet = 2 * time.Second

// confirmer runs confirmation rounds for the leader.
type confirmer struct {
	dial  func(addr string, timeout time.Duration) (net.Conn, error)
	nonce atomic.Uint64

	mu     sync.Mutex
	peers  map[string]*confirmPeer // by Raft address
	closed bool
}

func newConfirmer(dial func(string, time.Duration) (net.Conn, error)) *confirmer {
	c := &confirmer{dial: dial, peers: map[string]*confirmPeer{}}
	// Nonces start at a random point so that a restarted leader's rounds
	// never echo an earlier process's.
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	c.nonce.Store(binary.BigEndian.Uint64(seed[:]))
	return c
}

func (c *confirmer) peer(addr string) (*confirmPeer, func(string, time.Duration) (net.Conn, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, nil
	}
	p := c.peers[addr]
	if p == nil {
		p = &confirmPeer{}
		c.peers[addr] = p
	}
	return p, c.dial
}

func (c *confirmer) close() {
	c.mu.Lock()
	c.closed = true
	peers := c.peers
	c.peers = map[string]*confirmPeer{}
	c.mu.Unlock()
	for _, p := range peers {
		p.mu.Lock()
		if p.conn != nil {
			p.conn.Close()
			p.conn = nil
		}
		p.mu.Unlock()
	}
}

var (
	errPeerBusy  = errors.New("previous confirmation request to this peer still in flight")
	errPeerQuiet = errors.New("peer hung up on the last confirmation request unanswered; not asked for now")
)

// ask sends one request to addr and waits for the answer that echoes its
// nonce, until deadline.
func (c *confirmer) ask(addr string, req confirmRequest, deadline time.Time) (confirmAnswer, error) {
	p, dial := c.peer(addr)
	if p == nil {
		return confirmAnswer{}, ErrShutdown
	}
	if !p.mu.TryLock() {
		return confirmAnswer{}, errPeerBusy
	}
	defer p.mu.Unlock()
	if time.Now().Before(p.quietUntil) {
		return confirmAnswer{}, errPeerQuiet
	}
	fresh := false
	if p.conn == nil {
		conn, err := dial(addr, time.Until(deadline))
		if err != nil {
			return confirmAnswer{}, err
		}
		p.conn, fresh = conn, true
	}
	fail := func(err error) (confirmAnswer, error) {
		p.conn.Close()
		p.conn = nil
		if fresh && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			p.quietUntil = time.Now().Add(confirmQuiet)
		}
		return confirmAnswer{}, err
	}
	_ = p.conn.SetDeadline(deadline)
	if err := writeConfirmRequest(p.conn, req); err != nil {
		return fail(err)
	}
	for {
		a, err := readConfirmAnswer(p.conn)
		if err != nil {
			return fail(err)
		}
		if a.nonce == req.nonce {
			return a, nil
		}
		// An answer to another round: never evidence for this one.
	}
}

// round asks every other voter of the latest configuration whether this
// node leads in term. It returns nil once a majority of voters (this node
// included) said yes, ErrNotLeader once a voter reports a later term, and
// errUnconfirmed when too few said yes in time. A no in the same term (a
// voter that restarted and has not heard from this leader yet) only counts
// as a missing yes, so the caller may still confirm through the log.
func (c *confirmer) round(self string, servers []raft.Server, term uint64, timeout time.Duration) error {
	voters, yes := 0, 0
	var others []raft.Server
	for _, s := range servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(s.ID) == self {
			yes++
		} else {
			others = append(others, s)
		}
	}
	quorum := voters/2 + 1
	if yes >= quorum {
		return nil
	}
	req := confirmRequest{nonce: c.nonce.Add(1), term: term, leader: self}
	deadline := time.Now().Add(timeout)
	answers := make(chan error, len(others))
	for _, s := range others {
		go func(addr string) {
			a, err := c.ask(addr, req, deadline)
			switch {
			case err != nil:
				answers <- err
			case a.term > term:
				answers <- ErrNotLeader
			case !a.yes:
				answers <- errors.New("voter does not follow this leader in this term")
			default:
				answers <- nil
			}
		}(string(s.Address))
	}
	missing := 0
	for range others {
		err := <-answers
		switch {
		case err == nil:
			yes++
			if yes >= quorum {
				return nil
			}
		case errors.Is(err, ErrNotLeader):
			return ErrNotLeader
		default:
			missing++
		}
		if voters-missing < quorum {
			break
		}
	}
	return errUnconfirmed
}

// readRound is one confirmation shared by every read that joined it.
type readRound struct {
	done  chan struct{}
	index uint64
	err   error
}

// readBatcher coalesces concurrent reads into rounds, one at a time.
type readBatcher struct {
	run func() (uint64, error)

	mu      sync.Mutex
	next    *readRound // the round arriving reads join; nil when none waits
	running bool
}

// wait joins the next round and returns its read index.
func (b *readBatcher) wait(ctx context.Context, stop <-chan struct{}) (uint64, error) {
	b.mu.Lock()
	if b.next == nil {
		b.next = &readRound{done: make(chan struct{})}
	}
	r := b.next
	if !b.running {
		b.running = true
		go b.loop()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.index, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-stop:
		return 0, ErrShutdown
	}
}

func (b *readBatcher) loop() {
	for {
		b.mu.Lock()
		r := b.next
		b.next = nil
		if r == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		r.index, r.err = b.run()
		close(r.done)
	}
}

// ReadStats counts the work of linearizable reads on this node.
type ReadStats struct {
	Rounds    uint64 // confirmation rounds run as leader
	Fallbacks uint64 // rounds that fell back to a log round (an empty command)
}

type readCounters struct {
	rounds, fallbacks atomic.Uint64
}

// ReadStats reports the read-index counters.
func (n *Node) ReadStats() ReadStats {
	return ReadStats{Rounds: n.reads.rounds.Load(), Fallbacks: n.reads.fallbacks.Load()}
}

// readIndexRound runs one round: note the commit index, then prove this
// node still leads with evidence from after that moment.
func (n *Node) readIndexRound() (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	term := n.raft.CurrentTerm()
	if n.readyTerm.Load() != term {
		return 0, ErrNotLeader
	}
	commit := n.raft.CommitIndex()
	n.reads.rounds.Add(1)
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, ErrNotLeader
	}
	err := n.confirm.round(n.cfg.ID, f.Configuration().Servers, term, n.cfg.ElectionTimeout)
	if errors.Is(err, errUnconfirmed) {
		n.reads.fallbacks.Add(1)
		n.logger.Debug("leadership confirmation got too few answers; confirming through the log", "term", term)
		// An empty command, not raft.Barrier: the state machine sees it
		// and counts its index as applied. A barrier entry never reaches
		// the FSM, so a commit index that ends on one would keep every
		// later read waiting for an index the state never reports.
		if aerr := n.raft.Apply(nil, n.cfg.ApplyTimeout).Error(); aerr != nil {
			return 0, ErrNotLeader
		}
		err = nil
	}
	if err != nil {
		return 0, err
	}
	if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
		return 0, ErrNotLeader
	}
	return commit, nil
}

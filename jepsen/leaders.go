package jepsen

import (
	"bufio"
	"context"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LeaderClaim is one observation of a node saying it leads in a term.
type LeaderClaim struct {
	Term   uint64 `json:"term"`
	Node   string `json:"node"`
	Source string `json:"source"` // "status" (polled) or "log" (election won)
	Time   int64  `json:"time_ns,omitempty"`
}

// LeaderWatch polls every node's /v1/cluster/status and records, for each
// term, which nodes said they were the leader.
type LeaderWatch struct {
	mu     sync.Mutex
	claims map[uint64]map[string]LeaderClaim // term → node → first claim
	polls  int
}

func NewLeaderWatch() *LeaderWatch {
	return &LeaderWatch{claims: map[uint64]map[string]LeaderClaim{}}
}

func (lw *LeaderWatch) add(c LeaderClaim) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	m := lw.claims[c.Term]
	if m == nil {
		m = map[string]LeaderClaim{}
		lw.claims[c.Term] = m
	}
	if _, ok := m[c.Node]; !ok {
		m[c.Node] = c
	}
}

// Run polls each node every interval until ctx ends.
func (lw *LeaderWatch) Run(ctx context.Context, c *Cluster, h *History, interval time.Duration) {
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Add(1)
		go func(i int, n *Node) {
			defer wg.Done()
			for sleepCtx(ctx, interval) {
				st, err := c.status(ctx, i, time.Second)
				if err != nil {
					continue
				}
				lw.mu.Lock()
				lw.polls++
				lw.mu.Unlock()
				if selfState(st) == "leader" {
					lw.add(LeaderClaim{Term: st.Term, Node: n.ID, Source: "status", Time: h.Now()})
				}
			}
		}(i, n)
	}
	wg.Wait()
}

var electionWonRe = regexp.MustCompile(`election won: term=([0-9]+)`)

// ScanLogs adds every "election won" line of the node logs.
func (lw *LeaderWatch) ScanLogs(c *Cluster) error {
	for _, n := range c.Nodes {
		f, err := os.Open(n.LogPath)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := electionWonRe.FindStringSubmatch(sc.Text()); m != nil {
				t, _ := strconv.ParseUint(m[1], 10, 64)
				lw.add(LeaderClaim{Term: t, Node: n.ID, Source: "log"})
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	}
	return nil
}

// LeaderVerdict is the "never two leaders in one term" checker's answer.
type LeaderVerdict struct {
	Valid     bool                     `json:"valid"`
	Terms     int                      `json:"terms"`
	Polls     int                      `json:"polls"`
	Conflicts map[string][]LeaderClaim `json:"conflicts,omitempty"`
	Leaders   map[string]string        `json:"leaders"` // term → node
}

// Check reports every term claimed by more than one node.
func (lw *LeaderWatch) Check() LeaderVerdict {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	v := LeaderVerdict{Valid: true, Terms: len(lw.claims), Polls: lw.polls, Leaders: map[string]string{}}
	terms := make([]uint64, 0, len(lw.claims))
	for t := range lw.claims {
		terms = append(terms, t)
	}
	sort.Slice(terms, func(i, j int) bool { return terms[i] < terms[j] })
	for _, t := range terms {
		m := lw.claims[t]
		nodes := make([]string, 0, len(m))
		for n := range m {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		key := strconv.FormatUint(t, 10)
		v.Leaders[key] = strings.Join(nodes, ",")
		if len(nodes) > 1 {
			v.Valid = false
			if v.Conflicts == nil {
				v.Conflicts = map[string][]LeaderClaim{}
			}
			for _, n := range nodes {
				v.Conflicts[key] = append(v.Conflicts[key], m[n])
			}
		}
	}
	return v
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

const kvNodeHelp = `One node of the minimal key-value server that "refbench kv" starts three
of; not meant to be run by hand. Opens its Raft store (--store) in --dir,
listens for Raft on --raft-addr and for HTTP on --http-addr (port 0 picks a
free one) and prints one JSON line {"id","raft","http"} on stdout once
listening. It exits on SIGINT, SIGTERM or when its stdin is closed (its
parent went away).

HTTP (hraftd-style):
  PUT  /key/{k}   body {"value":"..."}: raft.Apply of the JSON command
                  {"op":"set","key":k,"value":v} on the leader, then 200
                  {"index":N}; a follower redirects (307) to the leader
  GET  /key/{k}   the value in this node's map (no consistency guarantee)
  POST /join      body {"id","raft","http"}: add a voter (leader only)
  GET  /status    this node's Raft state, leader, indexes
`

// kvCommand is a log entry's command, JSON-encoded as hraftd does.
type kvCommand struct {
	Op    string `json:"op"` // "set" or "node"
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
	// "node": a node's HTTP address, so that followers can redirect.
	ID   string `json:"id,omitempty"`
	HTTP string `json:"http,omitempty"`
}

type kvFSM struct {
	mu    sync.Mutex
	data  map[string]string
	nodes map[string]string // server ID -> HTTP address
}

func (f *kvFSM) Apply(l *raft.Log) any {
	var c kvCommand
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c.Op {
	case "set":
		f.data[c.Key] = c.Value
	case "node":
		f.nodes[c.ID] = c.HTTP
	default:
		return fmt.Errorf("unknown op %q", c.Op)
	}
	return nil
}

type kvState struct {
	Data  map[string]string `json:"data"`
	Nodes map[string]string `json:"nodes"`
}

func (f *kvFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := kvState{Data: make(map[string]string, len(f.data)), Nodes: make(map[string]string, len(f.nodes))}
	for k, v := range f.data {
		s.Data[k] = v
	}
	for k, v := range f.nodes {
		s.Nodes[k] = v
	}
	return &s, nil
}

func (f *kvFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s kvState
	if err := json.NewDecoder(rc).Decode(&s); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data, f.nodes = s.Data, s.Nodes
	if f.data == nil {
		f.data = map[string]string{}
	}
	if f.nodes == nil {
		f.nodes = map[string]string{}
	}
	return nil
}

func (s *kvState) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *kvState) Release() {}

// kvStatus is GET /status's answer.
type kvStatus struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	LeaderID string `json:"leader_id"`
	Applied  uint64 `json:"applied_index"`
	Last     uint64 `json:"last_index"`
	Voters   int    `json:"voters"`
}

// kvJoin is POST /join's body and the line a node prints when ready.
type kvJoin struct {
	ID   string `json:"id"`
	Raft string `json:"raft"`
	HTTP string `json:"http"`
}

type kvServer struct {
	id   string
	r    *raft.Raft
	fsm  *kvFSM
	self kvJoin
	echo bool // answer PUTs without Raft (the HTTP-only ceiling)
}

func runKVNode(ctx context.Context, args []string) error {
	fs := newFlags("kv-node", kvNodeHelp)
	id := fs.String("id", "n1", "Raft server ID")
	dir := fs.String("dir", "", "data dir (required)")
	store := fs.String("store", "bolt", "log store: bolt or wal (mem also works)")
	raftAddr := fs.String("raft-addr", "127.0.0.1:0", "Raft TCP address")
	httpAddr := fs.String("http-addr", "127.0.0.1:0", "HTTP address")
	bootstrap := fs.Bool("bootstrap", false, "bootstrap a one-node cluster of this node")
	timeout := fs.Duration("raft-timeout", 500*time.Millisecond, "Raft heartbeat and election timeout (leader lease: half)")
	logLevel := fs.String("log-level", "error", "Raft log level on stderr: trace, debug, info, warn, error, off")
	echo := fs.Bool("echo", false, "answer PUT /key/{k} after decoding its body, without Raft or the map")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("--dir is required")
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	// Stop when the parent closes our stdin (or dies).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	fsm := &kvFSM{data: map[string]string{}, nodes: map[string]string{}}
	n, err := startNode(raft.ServerID(*id), *store, *dir, *raftAddr, *timeout, fsm, logger)
	if err != nil {
		return err
	}
	defer func() {
		if err := n.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "kv-node %s: stop: %v\n", *id, err)
		}
	}()
	if *bootstrap {
		cfg := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: n.id, Address: n.transport.LocalAddr()}}}
		if err := n.raft.BootstrapCluster(cfg).Error(); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	s := &kvServer{id: *id, r: n.raft, fsm: fsm,
		self: kvJoin{ID: *id, Raft: string(n.transport.LocalAddr()), HTTP: ln.Addr().String()}, echo: *echo}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /key/{k}", s.put)
	mux.HandleFunc("GET /key/{k}", s.get)
	mux.HandleFunc("POST /join", s.join)
	mux.HandleFunc("GET /status", s.status)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	line, _ := json.Marshal(s.self)
	fmt.Println(string(line))

	select {
	case <-ctx.Done():
	case err = <-served:
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

type errBody struct {
	Error string `json:"error"`
}

// notLeader redirects to the leader's HTTP address when this node knows it.
func (s *kvServer) notLeader(w http.ResponseWriter, r *http.Request) {
	_, lid := s.r.LeaderWithID()
	s.fsm.mu.Lock()
	addr := s.fsm.nodes[string(lid)]
	s.fsm.mu.Unlock()
	if addr == "" {
		writeJSON(w, http.StatusServiceUnavailable, errBody{"not the leader, and no known leader"})
		return
	}
	http.Redirect(w, r, "http://"+addr+r.URL.RequestURI(), http.StatusTemporaryRedirect)
}

func (s *kvServer) apply(w http.ResponseWriter, r *http.Request, c kvCommand) {
	if s.r.State() != raft.Leader {
		s.notLeader(w, r)
		return
	}
	b, err := json.Marshal(c)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, errBody{err.Error()})
		return
	}
	f := s.r.Apply(b, 10*time.Second)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			s.notLeader(w, r)
			return
		}
		writeJSON(w, http.StatusServiceUnavailable, errBody{err.Error()})
		return
	}
	if err, ok := f.Response().(error); ok {
		writeJSON(w, http.StatusBadRequest, errBody{err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Index uint64 `json:"index"`
	}{f.Index()})
}

func (s *kvServer) put(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Value string `json:"value"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, errBody{"body: " + err.Error()})
		return
	}
	if s.echo {
		writeJSON(w, http.StatusOK, struct {
			Index uint64 `json:"index"`
		}{0})
		return
	}
	s.apply(w, r, kvCommand{Op: "set", Key: r.PathValue("k"), Value: body.Value})
}

func (s *kvServer) get(w http.ResponseWriter, r *http.Request) {
	s.fsm.mu.Lock()
	v, ok := s.fsm.data[r.PathValue("k")]
	s.fsm.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, errBody{"no such key"})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Value string `json:"value"`
	}{v})
}

func (s *kvServer) join(w http.ResponseWriter, r *http.Request) {
	var j kvJoin
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&j); err != nil || j.ID == "" || j.Raft == "" {
		writeJSON(w, http.StatusBadRequest, errBody{"want {\"id\",\"raft\",\"http\"}"})
		return
	}
	if s.r.State() != raft.Leader {
		writeJSON(w, http.StatusServiceUnavailable, errBody{"not the leader"})
		return
	}
	if j.ID != s.id {
		if err := s.r.AddVoter(raft.ServerID(j.ID), raft.ServerAddress(j.Raft), 0, 10*time.Second).Error(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, errBody{err.Error()})
			return
		}
	}
	s.apply(w, r, kvCommand{Op: "node", ID: j.ID, HTTP: j.HTTP})
}

func (s *kvServer) status(w http.ResponseWriter, r *http.Request) {
	_, lid := s.r.LeaderWithID()
	st := kvStatus{ID: s.id, State: s.r.State().String(), LeaderID: string(lid),
		Applied: s.r.AppliedIndex(), Last: s.r.LastIndex()}
	if f := s.r.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.Suffrage == raft.Voter {
				st.Voters++
			}
		}
	}
	writeJSON(w, http.StatusOK, st)
}

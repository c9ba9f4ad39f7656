package jepsen

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Op types, as Jepsen names them.
const (
	TypeOK   = "ok"   // happened, with this result
	TypeFail = "fail" // definitely did not happen
	TypeInfo = "info" // unknown: may or may not have happened
)

// Never is the completion time of an op whose outcome stayed unknown
// (porcupine's convention: it returns at infinity).
const Never int64 = -1

// Attempt is one try of an op: which node, when, and what went wrong. Every
// attempt of a write carries the op's single request id.
type Attempt struct {
	Node  string `json:"node"`
	Start int64  `json:"start_ns"`
	End   int64  `json:"end_ns"`
	Err   string `json:"error,omitempty"`
}

// Op is one client operation in the history.
type Op struct {
	ID        int64     `json:"id"`
	Process   int       `json:"process"`
	F         string    `json:"f"`
	Sess      int       `json:"session"` // session index, -1 if none
	A         int       `json:"a"`       // from authority, or the authority read or extended; -1 if none
	B         int       `json:"b"`       // to authority; -1 if none
	Owner     string    `json:"owner,omitempty"`
	Gen       uint64    `json:"gen,omitempty"`
	Next      string    `json:"next,omitempty"`
	Bundle    string    `json:"bundle,omitempty"`
	Tag       string    `json:"tag,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	Final     bool      `json:"final,omitempty"` // a read made after healing
	Probe     string    `json:"probe,omitempty"` // a read the nemesis aimed at a node: when (during-pause, after-resume)
	Invoke    int64     `json:"invoke_ns"`
	Complete  int64     `json:"complete_ns"` // Never for info
	Type      string    `json:"type"`
	Code      string    `json:"code,omitempty"`
	Error     string    `json:"error,omitempty"`
	Attempts  []Attempt `json:"attempts,omitempty"`
	FactSeq   uint64    `json:"fact_seq,omitempty"`
	Index     uint64    `json:"index,omitempty"`   // write: the Raft index it was applied at; read: the applied index its answer reflected (X-Reconf-Index)
	Served    string    `json:"served,omitempty"`  // read: the node whose state answered (the confirming leader, or the node asked for a stale read)
	Resend    *Resend   `json:"resend,omitempty"`  // the same request sent again after the answer
	Classes   []uint8   `json:"classes,omitempty"` // read_footprint: every session's class at A
	Missing   bool      `json:"missing,omitempty"` // read_footprint: authority_not_found
	Out       mOutput   `json:"out"`
}

// Resend is the answer to a finished write sent again with its request id.
type Resend struct {
	Node     string `json:"node"`
	Index    uint64 `json:"index,omitempty"`
	FactSeq  uint64 `json:"fact_seq,omitempty"`
	Deduped  bool   `json:"deduped,omitempty"`
	Code     string `json:"code,omitempty"`
	Definite bool   `json:"definite,omitempty"`
	Err      string `json:"error,omitempty"`
}

// Fault is one nemesis action: a fault and its healing.
type Fault struct {
	ID     int      `json:"id"`
	Kind   string   `json:"kind"`
	Start  int64    `json:"start_ns"`
	End    int64    `json:"end_ns"` // healed; -1 if never healed
	Nodes  []string `json:"nodes,omitempty"`
	Detail string   `json:"detail,omitempty"`
	Error  string   `json:"error,omitempty"`
	Damage *Damage  `json:"damage,omitempty"` // flip-byte (flip.go)
}

// History records ops and faults against one clock.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []*Op
	fault []*Fault
	next  int64
}

// NewHistory starts the clock.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is nanoseconds since the history began (monotonic).
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Add records a finished op and gives it an id.
func (h *History) Add(op *Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	op.ID = h.next
	h.ops = append(h.ops, op)
}

// AddFault records a fault (its End is filled in when it heals).
func (h *History) AddFault(f *Fault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f.ID = len(h.fault) + 1
	h.fault = append(h.fault, f)
}

// Ops returns the ops sorted by invocation time.
func (h *History) Ops() []*Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := append([]*Op(nil), h.ops...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Invoke < out[j].Invoke })
	return out
}

// Faults returns the faults in order.
func (h *History) Faults() []*Fault {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Fault, len(h.fault))
	for i, f := range h.fault {
		c := *f
		out[i] = &c
	}
	return out
}

// historyLine is one line of history.jsonl: an op, or a nemesis event.
type historyLine struct {
	Time int64  `json:"time_ns"`
	Kind string `json:"kind"` // "op" or "nemesis"
	Op   *Op    `json:"op,omitempty"`
	Nem  *struct {
		Phase string `json:"phase"` // start or heal
		*Fault
	} `json:"nemesis,omitempty"`
}

// WriteJSONL writes every op (at its invocation time) and every nemesis
// start and heal, in time order.
func (h *History) WriteJSONL(path string) error {
	var lines []historyLine
	for _, op := range h.Ops() {
		lines = append(lines, historyLine{Time: op.Invoke, Kind: "op", Op: op})
	}
	for _, f := range h.Faults() {
		start := historyLine{Time: f.Start, Kind: "nemesis"}
		start.Nem = &struct {
			Phase string `json:"phase"`
			*Fault
		}{"start", f}
		lines = append(lines, start)
		if f.End >= 0 {
			heal := historyLine{Time: f.End, Kind: "nemesis"}
			heal.Nem = &struct {
				Phase string `json:"phase"`
				*Fault
			}{"heal", f}
			lines = append(lines, heal)
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Time < lines[j].Time })
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for i := range lines {
		if err := enc.Encode(&lines[i]); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadHistoryJSONL reads a history.jsonl written by WriteJSONL (gzipped
// when the name ends in .gz): its ops in invocation order and its faults
// with their heal times. It lets a recorded run be checked again.
func ReadHistoryJSONL(path string) ([]*Op, []*Fault, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	var ops []*Op
	var faults []*Fault
	byID := map[int]*Fault{}
	dec := json.NewDecoder(bufio.NewReader(r))
	for line := 1; ; line++ {
		var l historyLine
		if err := dec.Decode(&l); err == io.EOF {
			break
		} else if err != nil {
			return nil, nil, fmt.Errorf("%s: record %d: %w", path, line, err)
		}
		switch {
		case l.Kind == "op" && l.Op != nil:
			ops = append(ops, l.Op)
		case l.Kind == "nemesis" && l.Nem != nil && l.Nem.Fault != nil:
			if f := byID[l.Nem.ID]; f != nil {
				if l.Nem.Phase == "heal" {
					f.End = l.Time
				}
				continue
			}
			fc := *l.Nem.Fault
			byID[fc.ID] = &fc
			faults = append(faults, &fc)
		default:
			return nil, nil, fmt.Errorf("%s: record %d: neither an op nor a nemesis event", path, line)
		}
	}
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Invoke < ops[j].Invoke })
	return ops, faults, nil
}

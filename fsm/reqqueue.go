package fsm

// requestQueue holds the request-id table's entries in apply order (seq
// order), oldest first: the table forgets from the front and remembers at
// the back, so a FIFO does what a tree ordered by seq did, in O(1).
//
// Each entry has a slot, its position in the sequence of every entry ever
// pushed (a counter private to the process, never persisted); the lookup
// index finds an entry by its slot. Entries live in chunks of
// requestChunk slots: chunks[i] holds slots (base+i)*requestChunk and up.
// A chunk is only ever written at its end, while it is the last one.
//
// Clone shares the chunks: a clone and its original both start out not
// owning them, and the first change on either side copies the chunk list
// and the partial last chunk (at most requestChunk entries) into memory of
// its own. Nothing written afterwards is visible to the other side.
type requestQueue struct {
	chunks [][]requestEntry
	base   uint64 // chunk number of chunks[0]
	lo, hi uint64 // the live slots are lo ≤ slot < hi
	owned  bool   // chunks and its last chunk belong to this queue alone
}

const requestChunk = 256

// at returns the entry in a live slot.
func (q *requestQueue) at(slot uint64) *requestEntry {
	return &q.chunks[slot/requestChunk-q.base][slot%requestChunk]
}

// own makes the chunk list, and the last chunk if it can still grow, this
// queue's own before a change.
func (q *requestQueue) own() {
	if q.owned {
		return
	}
	list := make([][]requestEntry, len(q.chunks), len(q.chunks)+1)
	copy(list, q.chunks)
	if n := len(list); n > 0 && len(list[n-1]) < requestChunk {
		last := make([]requestEntry, len(list[n-1]), requestChunk)
		copy(last, list[n-1])
		list[n-1] = last
	}
	q.chunks, q.owned = list, true
}

// push appends e as the newest entry and returns its slot.
func (q *requestQueue) push(e requestEntry) uint64 {
	q.own()
	slot := q.hi
	if slot%requestChunk == 0 {
		if len(q.chunks) == 0 {
			q.base = slot / requestChunk
		}
		q.chunks = append(q.chunks, make([]requestEntry, 0, requestChunk))
	}
	last := &q.chunks[len(q.chunks)-1]
	*last = append(*last, e)
	q.hi++
	return slot
}

// pop removes the oldest entry and returns it with its slot. The queue
// must not be empty.
func (q *requestQueue) pop() (requestEntry, uint64) {
	q.own()
	slot := q.lo
	e := *q.at(slot)
	q.lo++
	if q.lo%requestChunk == 0 {
		// The first chunk is spent: drop it, and let the collector have it.
		q.chunks[0] = nil
		q.chunks = q.chunks[1:]
		q.base++
	}
	return e, slot
}

// each calls fn for every entry, oldest first, until fn returns false.
func (q *requestQueue) each(fn func(e *requestEntry) bool) {
	for slot := q.lo; slot < q.hi; slot++ {
		if !fn(q.at(slot)) {
			return
		}
	}
}

package fsm

// Named fact consumers (retention.go): each has a cursor, the newest fact
// it has acknowledged. Retention keeps what some consumer has not
// acknowledged, up to hard_max_facts.

// Consumer is a registered reader of the fact journal.
type Consumer struct {
	Name   string
	Cursor uint64 // it has read every fact up to this Seq
}

// Consumer limits.
const (
	MaxConsumers         = 256
	MaxConsumerNameBytes = 128
)

func lessConsumer(a, b Consumer) bool { return a.Name < b.Name }

// CheckConsumerName accepts 1 to MaxConsumerNameBytes of letters, digits,
// '.', '_' and '-': names appear in URLs and metric labels.
func CheckConsumerName(name string) *Error {
	if name == "" || len(name) > MaxConsumerNameBytes {
		return invalidf("name", "must be 1 to %d bytes, not %d", MaxConsumerNameBytes, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return invalidf("name", "may hold only letters, digits, '.', '_' and '-'; byte %d is %q", i, c)
		}
	}
	return nil
}

// LookupConsumer returns the named consumer.
func (s *State) LookupConsumer(name string) (Consumer, bool) {
	return s.consumers.Get(Consumer{Name: name})
}

// Consumers lists the consumers by name.
func (s *State) Consumers() []Consumer {
	out := make([]Consumer, 0, s.consumers.Len())
	s.consumers.Ascend(func(c Consumer) bool {
		out = append(out, c)
		return true
	})
	return out
}

// ackConsumer registers a consumer or advances its cursor. A cursor never
// goes back (an older acknowledgement, a retry, changes nothing). A new
// consumer cannot start below the oldest retained fact: it would have
// missed facts already.
func (s *State) ackConsumer(op *AckConsumer) Result {
	last := s.LastFactSeq()
	if op.Through > last {
		return Result{Err: invalidf("through", "is %d, beyond the newest fact %d", op.Through, last)}
	}
	c, ok := s.LookupConsumer(op.Name)
	if !ok {
		if s.consumers.Len() >= MaxConsumers {
			return Result{Err: invalidf("name", "cannot register consumer %q: %d consumers are registered, the limit", op.Name, MaxConsumers)}
		}
		if op.Through < s.factBase {
			return Result{Err: factsTrimmed(op.Through, s.factBase+1)}
		}
		c = Consumer{Name: op.Name}
	}
	c.Cursor = max(c.Cursor, op.Through)
	s.enterBounded()
	s.consumers.ReplaceOrInsert(c)
	return Result{Consumer: &c}
}

func (s *State) dropConsumer(op *DropConsumer) Result {
	c, ok := s.LookupConsumer(op.Name)
	if !ok {
		return Result{Err: errorf(CodeConsumerNotFound, "no consumer is named %q", op.Name)}
	}
	s.enterBounded()
	s.consumers.Delete(c)
	return Result{Consumer: &c}
}

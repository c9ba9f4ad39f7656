package fsm

import (
	"bufio"
	"errors"
	"fmt"
)

// Binary forms of the bounded-state commands (retention.go). Their payloads
// are framed like every command's (envelope.go).

func (e *encoder) retention(r *Retention) {
	e.uvarint(r.MaxFacts)
	e.uvarint(r.HardMaxFacts)
	e.uvarint(r.MaxAgeMillis)
	e.uvarint(r.RequestIDTTLMillis)
	e.uvarint(r.RequestIDBudgetBytes)
}

func (d *decoder) retention() Retention {
	return Retention{MaxFacts: d.uvarint(), HardMaxFacts: d.uvarint(), MaxAgeMillis: d.uvarint(),
		RequestIDTTLMillis: d.uvarint(), RequestIDBudgetBytes: d.uvarint()}
}

func (e *encoder) boundedPayload(op Op) {
	switch op := op.(type) {
	case *SetRetention:
		e.u8(op.Set)
		e.retention(&op.Retention)
		e.uvarint(op.AtMillis)
	case *AckConsumer:
		e.str(op.Name)
		e.uvarint(op.Through)
		e.uvarint(op.AtMillis)
	case *DropConsumer:
		e.str(op.Name)
		e.uvarint(op.AtMillis)
	}
}

// boundedPayload decodes the payload of a bounded-state command; nil for
// any other type (decodePayload only calls it for known types).
func (d *decoder) boundedPayload(typ Type) Op {
	switch typ {
	case TypeSetRetention:
		return &SetRetention{Set: d.u8(), Retention: d.retention(), AtMillis: d.uvarint()}
	case TypeAckConsumer:
		return &AckConsumer{Name: d.str(), Through: d.uvarint(), AtMillis: d.uvarint()}
	case TypeDropConsumer:
		return &DropConsumer{Name: d.str(), AtMillis: d.uvarint()}
	}
	d.fail("no payload decoder for %s", typ)
	return nil
}

// readBoundedSection reads the sections of a state in bounded mode.
func (s *State) readBoundedSection(name string, br *bufio.Reader) error {
	switch name {
	case "bounded":
		records := 0
		return readRecords(br, func(d *decoder) error {
			if records++; records > 1 {
				return errors.New("more than one bounded record")
			}
			p := d.retention()
			clock, base := d.uvarint(), d.uvarint()
			s.factsLost, s.evictedEarly, s.lastEarlyStamp = d.uvarint(), d.uvarint(), d.uvarint()
			if d.err != nil {
				return d.err
			}
			if err := checkRetention(&SetRetention{Set: retainAll, Retention: p}); err != nil {
				return fmt.Errorf("policy: %v", err.Message)
			}
			if p.MaxFacts > p.HardMaxFacts {
				return fmt.Errorf("policy: max_facts %d above hard_max_facts %d", p.MaxFacts, p.HardMaxFacts)
			}
			switch {
			case base%factChunk != 0:
				return fmt.Errorf("trimmed fact count %d is not a whole number of chunks", base)
			case s.factCount() > int(s.factBase) && base != s.factBase:
				return fmt.Errorf("trimmed fact count %d, but the journal starts after %d", base, s.factBase)
			case s.factCount() == 0:
				s.factBase = base // every fact trimmed: the journal resumes after them
			}
			s.bounded, s.policy, s.clock = true, p, clock
			return nil
		})
	case "consumers":
		return readRecords(br, func(d *decoder) error {
			return untilEnd(d, func() error {
				c := Consumer{Name: d.str(), Cursor: d.uvarint()}
				if d.err != nil {
					return d.err
				}
				if err := CheckConsumerName(c.Name); err != nil {
					return fmt.Errorf("consumer: %v", err.Message)
				}
				if max, ok := s.consumers.Max(); ok && c.Name <= max.Name {
					return fmt.Errorf("consumer %q out of order", c.Name)
				}
				if c.Cursor > s.LastFactSeq() || s.consumers.Len() >= MaxConsumers {
					return fmt.Errorf("consumer %q: cursor %d beyond the newest fact %d, or too many consumers", c.Name, c.Cursor, s.LastFactSeq())
				}
				s.consumers.ReplaceOrInsert(c)
				return nil
			})
		})
	case "request_times":
		slot := s.requestQ.lo
		var last uint64
		err := readRecords(br, func(d *decoder) error {
			return untilEnd(d, func() error {
				at := d.uvarint()
				if d.err != nil {
					return d.err
				}
				switch {
				case slot >= s.requestQ.hi:
					return errors.New("more request times than request ids")
				case at != 0 && (at < last || last == 0 && slot > s.requestQ.lo):
					// Stamps never go back, and only the newest ids lack one.
					return fmt.Errorf("request time %d out of order", at)
				case at > s.clock:
					return fmt.Errorf("request time %d after the clock %d", at, s.clock)
				}
				s.requestQ.at(slot).at = at
				if at != 0 {
					last = at
				}
				slot++
				return nil
			})
		})
		if err == nil && slot != s.requestQ.hi {
			err = fmt.Errorf("%w: %d request times for %d request ids", ErrInvalidState, slot-s.requestQ.lo, s.requestQ.hi-s.requestQ.lo)
		}
		return err
	}
	return fmt.Errorf("unknown section %s", name)
}

// checkBounded finishes a restore: a legacy state must be one an older
// release could write; a bounded one notes whether its newest ids still
// wait for a stamp (only the newest can: a stamp dates all before it).
func (s *State) checkBounded() error {
	if !s.bounded {
		if s.factBase != 0 {
			return errors.New("a trimmed journal without a retention policy")
		}
		if s.requests.Len() > MaxRequestIDs {
			return fmt.Errorf("more than %d request ids without a retention policy", MaxRequestIDs)
		}
		return nil
	}
	if s.requests.Len() > 0 {
		s.reqUnstamped = s.requestQ.at(s.requestQ.hi-1).at == 0
	}
	return nil
}

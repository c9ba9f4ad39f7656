package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

// factsSubcommands are the facts subcommands of bounded state: the
// retention policy, consumers, and the loss-free export.
func factsSubcommands(s *streams) []*cli.Command {
	return []*cli.Command{
		{
			Name:      "retention",
			Usage:     "show or change the fact retention policy",
			UsageText: "reconfctl facts retention show|set",
			Description: `The journal keeps max_facts facts (more while a consumer has not
acknowledged them, never more than hard_max_facts), and drops facts older
than max_age on the cluster's clock. Request ids are remembered for
request_id_ttl, within request_id_budget_bytes.

Examples:
   reconfctl facts retention show
   reconfctl facts retention set --max-facts 100000 --max-age 30d`,
			Subcommands: []*cli.Command{
				{
					Name:        "show",
					Usage:       "the policy, and what the journal and the request-id table hold",
					UsageText:   "reconfctl facts retention show",
					Description: "Examples:\n   reconfctl facts retention show\n   reconfctl facts retention show --json",
					Action:      action(s, 0, 0, "", retentionShow),
				},
				{
					Name:        "set",
					Usage:       "change some fields of the policy (admin); the others keep their value",
					UsageText:   "reconfctl facts retention set [--max-facts N] [--hard-max-facts M] [--max-age 30d] [--request-id-ttl 10m] [--request-id-budget BYTES]",
					Description: "Examples:\n   reconfctl facts retention set --max-facts 2000\n   reconfctl facts retention set --request-id-ttl 30m --request-id-budget 134217728",
					Flags: []cli.Flag{
						&cli.Uint64Flag{Name: "max-facts", Usage: "facts kept when no consumer holds more back"},
						&cli.Uint64Flag{Name: "hard-max-facts", Usage: "facts kept at most, whatever consumers have not read"},
						&cli.StringFlag{Name: "max-age", Usage: "facts older than this go (30d, 720h; 0: no age limit)"},
						&cli.StringFlag{Name: "request-id-ttl", Usage: "how long a request id is remembered (10m)"},
						&cli.Uint64Flag{Name: "request-id-budget", Usage: "bytes the request-id table may hold before the oldest ids go early"},
					},
					Action: action(s, 0, 0, "", retentionSet),
				},
			},
		},
		{
			Name:      "consumers",
			Usage:     "list, acknowledge or drop named consumers of the journal",
			UsageText: "reconfctl facts consumers list|ack|drop",
			Description: `A consumer is a named cursor: retention keeps the facts after it (up to
hard_max_facts). facts export registers and advances one for you.

Examples:
   reconfctl facts consumers list
   reconfctl facts consumers ack audit --through 1200
   reconfctl facts consumers drop audit`,
			Subcommands: []*cli.Command{
				{Name: "list", Usage: "every consumer, its cursor and lag", UsageText: "reconfctl facts consumers list",
					Description: "Examples:\n   reconfctl facts consumers list", Action: action(s, 0, 0, "", consumersList)},
				{Name: "ack", Usage: "register a consumer or advance its cursor", UsageText: "reconfctl facts consumers ack NAME --through SEQ",
					Description: "Examples:\n   reconfctl facts consumers ack audit --through 1200",
					Flags:       []cli.Flag{&cli.Uint64Flag{Name: "through", Required: true, Usage: "the newest fact `SEQ` the consumer has durably read"}},
					Action:      action(s, 1, 1, "NAME", consumersAck)},
				{Name: "drop", Usage: "forget a consumer (admin): retention no longer waits for it", UsageText: "reconfctl facts consumers drop NAME",
					Description: "Examples:\n   reconfctl facts consumers drop audit",
					Action:      action(s, 1, 1, "NAME", consumersDrop)},
			},
		},
		{
			Name:      "export",
			Usage:     "copy the journal to JSON-lines files, loss-free, through a named consumer",
			UsageText: "reconfctl facts export --consumer NAME --out DIR [--follow] [--rotate-bytes N]",
			Description: `Writes every fact, one JSON object per line (with its "seq"), to files
DIR/facts-<first seq>.jsonl of about --rotate-bytes each. After each page it
fsyncs the file, then acknowledges the page to the cluster as consumer NAME,
so retention keeps what is not yet on disk here. After a crash (kill -9) it
resumes after the larger of the consumer's cursor and the newest seq in DIR:
nothing twice, nothing skipped. It checks that seqs follow one another and
stops with an error (exit 1) on a gap or when the cluster answers
facts_trimmed. Progress goes to stderr. Without --follow it stops once it
has caught up.

Examples:
   reconfctl facts export --consumer audit --out /var/lib/reconf-audit --follow
   reconfctl facts export --consumer audit --out ./audit`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "consumer", Required: true, Usage: "consumer `NAME` (registered on first use)"},
				&cli.StringFlag{Name: "out", Required: true, Usage: "directory `DIR` for the files"},
				&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep exporting new facts until interrupted"},
				&cli.Int64Flag{Name: "rotate-bytes", Value: 64 << 20, Usage: "start a new file past this size"},
				&cli.IntFlag{Name: "page", Value: factsPage, Usage: "facts per read and acknowledgement (1-10000)"},
			},
			Action: action(s, 0, 0, "", exportFacts),
		},
	}
}

func retentionShow(ctx context.Context, c *cli.Context, x *conn) error {
	r, err := x.client.Retention(ctx)
	if err != nil {
		return err
	}
	return printRetention(x, r)
}

func printRetention(x *conn, r *transport.RetentionJSON) error {
	if x.json {
		return printJSON(x.stdout, r)
	}
	t := newTable(x.stdout, "FIELD", "VALUE")
	t.row("bounded", r.Bounded)
	t.row("max_facts", *r.MaxFacts)
	t.row("hard_max_facts", *r.HardMaxFacts)
	t.row("max_age", *r.MaxAge)
	t.row("request_id_ttl", *r.RequestIDTTL)
	t.row("request_id_budget_bytes", *r.RequestIDBudgetBytes)
	t.row("retained", r.Retained)
	t.row("first_seq", r.FirstSeq)
	t.row("last_seq", r.LastSeq)
	t.row("facts_lost", r.FactsLost)
	t.row("request_ids", r.RequestIDs)
	t.row("request_id_bytes", r.RequestIDBytes)
	t.row("request_id_window_seconds", r.RequestIDWindowSeconds)
	t.row("request_ids_evicted_early", r.RequestIDsEvictedEarly)
	return t.flush()
}

func retentionSet(ctx context.Context, c *cli.Context, x *conn) error {
	var req transport.RetentionJSON
	if c.IsSet("max-facts") {
		v := c.Uint64("max-facts")
		req.MaxFacts = &v
	}
	if c.IsSet("hard-max-facts") {
		v := c.Uint64("hard-max-facts")
		req.HardMaxFacts = &v
	}
	if c.IsSet("max-age") {
		v := c.String("max-age")
		req.MaxAge = &v
	}
	if c.IsSet("request-id-ttl") {
		v := c.String("request-id-ttl")
		req.RequestIDTTL = &v
	}
	if c.IsSet("request-id-budget") {
		v := c.Uint64("request-id-budget")
		req.RequestIDBudgetBytes = &v
	}
	if req.MaxFacts == nil && req.HardMaxFacts == nil && req.MaxAge == nil && req.RequestIDTTL == nil && req.RequestIDBudgetBytes == nil {
		return usageErr(c, "give at least one of --max-facts, --hard-max-facts, --max-age, --request-id-ttl, --request-id-budget")
	}
	if _, err := x.client.SetRetention(ctx, req); err != nil {
		return err
	}
	return retentionShow(ctx, c, x)
}

func consumersList(ctx context.Context, c *cli.Context, x *conn) error {
	r, err := x.client.Consumers(ctx)
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, r)
	}
	t := newTable(x.stdout, "NAME", "CURSOR", "LAG", "BEHIND")
	for _, cs := range r.Consumers {
		t.row(cs.Name, cs.Cursor, cs.Lag, cs.Behind)
	}
	return t.flush()
}

func consumersAck(ctx context.Context, c *cli.Context, x *conn) error {
	r, err := x.client.AckConsumer(ctx, c.Args().First(), c.Uint64("through"), "")
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, r)
	}
	fmt.Fprintf(x.stdout, "consumer %s at %d\n", r.Name, r.Cursor)
	return nil
}

func consumersDrop(ctx context.Context, c *cli.Context, x *conn) error {
	r, err := x.client.DropConsumer(ctx, c.Args().First())
	if err != nil {
		return err
	}
	if x.json {
		return printJSON(x.stdout, r)
	}
	fmt.Fprintf(x.stdout, "consumer %s dropped (its cursor was %d)\n", r.Name, r.Cursor)
	return nil
}

// ---- export ----

// exportFile names: facts-<seq of its first fact, 20 digits>.jsonl, so
// that name order is seq order.
const exportPrefix, exportSuffix = "facts-", ".jsonl"

// exportFiles lists the export files in DIR in seq order.
func exportFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, exportPrefix) && strings.HasSuffix(n, exportSuffix) && e.Type().IsRegular() {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

// lastExported is the seq of the last complete line of the newest export
// file (0 if none). A line cut short by a crash is cut off the file: it was
// never acknowledged, so it is written again.
func lastExported(files []string) (uint64, error) {
	for i := len(files) - 1; i >= 0; i-- {
		data, err := os.ReadFile(files[i])
		if err != nil {
			return 0, err
		}
		end := bytes.LastIndexByte(data, '\n') + 1
		if end != len(data) {
			if err := os.Truncate(files[i], int64(end)); err != nil {
				return 0, fmt.Errorf("cutting the partial last line of %s: %w", files[i], err)
			}
			data = data[:end]
		}
		if end == 0 {
			continue // empty: look at the one before
		}
		prev := bytes.LastIndexByte(data[:end-1], '\n') + 1
		var f struct {
			Seq *uint64 `json:"seq"`
		}
		if err := json.Unmarshal(data[prev:end-1], &f); err != nil || f.Seq == nil {
			return 0, fmt.Errorf("%s: last line is not a fact: %v", files[i], err)
		}
		return *f.Seq, nil
	}
	return 0, nil
}

// exporter writes facts to rotated files.
type exporter struct {
	dir    string
	rotate int64
	f      *os.File
	w      *bufio.Writer
	size   int64
	dirty  bool
}

func (e *exporter) open(nextSeq uint64, files []string) error {
	if len(files) > 0 {
		last := files[len(files)-1]
		f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		e.f, e.w, e.size = f, bufio.NewWriterSize(f, 256<<10), st.Size()
		if e.size < e.rotate {
			return nil
		}
	}
	return e.rotateTo(nextSeq)
}

// rotateTo syncs and closes the current file and starts the next one.
func (e *exporter) rotateTo(seq uint64) error {
	if e.f != nil {
		if err := e.sync(); err != nil {
			return err
		}
		if err := e.f.Close(); err != nil {
			return err
		}
	}
	name := filepath.Join(e.dir, fmt.Sprintf("%s%020d%s", exportPrefix, seq, exportSuffix))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// The new name must be durable too before anything in it is acknowledged.
	if d, err := os.Open(e.dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			f.Close()
			return fmt.Errorf("syncing %s: %w", e.dir, err)
		}
	}
	e.f, e.w, e.size = f, bufio.NewWriterSize(f, 256<<10), 0
	return nil
}

func (e *exporter) write(f *transport.FactJSON) error {
	if e.size >= e.rotate {
		if err := e.rotateTo(f.Seq); err != nil {
			return err
		}
	}
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	n, err := e.w.Write(b)
	e.size += int64(n)
	e.dirty = true
	return err
}

func (e *exporter) sync() error {
	if !e.dirty {
		return nil
	}
	if err := e.w.Flush(); err != nil {
		return err
	}
	if err := e.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", e.f.Name(), err)
	}
	e.dirty = false
	return nil
}

func exportFacts(_ context.Context, c *cli.Context, x *conn) error {
	name, dir, follow := c.String("consumer"), c.String("out"), c.Bool("follow")
	page := c.Int("page")
	if page < 1 || page > 10000 {
		return usageErr(c, "--page must be from 1 to 10000, not %d", page)
	}
	if c.Int64("rotate-bytes") < 1 {
		return usageErr(c, "--rotate-bytes must be positive")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files, err := exportFiles(dir)
	if err != nil {
		return err
	}
	local, err := lastExported(files)
	if err != nil {
		return err
	}
	// The export runs until interrupted (or caught up); each request gets
	// the --timeout bound on its own.
	base := x.base
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(base, x.timeout) }
	ctx, cancel := call()
	cons, _, err := x.client.Consumer(ctx, name)
	cancel()
	if err != nil {
		return err
	}
	after := local
	switch {
	case cons == nil:
		// Register at what DIR holds: retention keeps everything after it.
		ctx, cancel := call()
		_, err := x.client.AckConsumer(ctx, name, local, "")
		cancel()
		if err != nil {
			return fmt.Errorf("registering consumer %s after seq %d: %w", name, local, err)
		}
	case cons.Cursor > local && local > 0:
		return fmt.Errorf("consumer %s has acknowledged up to seq %d but %s ends at seq %d: facts %d-%d are missing here; export to a new directory or use the directory that has them",
			name, cons.Cursor, dir, local, local+1, cons.Cursor)
	default:
		after = max(cons.Cursor, local)
	}
	e := &exporter{dir: dir, rotate: c.Int64("rotate-bytes")}
	if err := e.open(after+1, files); err != nil {
		return err
	}
	defer func() {
		_ = e.sync()
		_ = e.f.Close()
	}()
	fmt.Fprintf(x.stderr, "export %s: consumer %s, resuming after seq %d (cursor %s, files end at %d)\n", dir, name, after, cursorOf(cons), local)
	exported, lastReport := 0, time.Now()
	for {
		ctx, cancel := call()
		p, err := x.client.Facts(ctx, after, page)
		cancel()
		if err != nil {
			if base.Err() != nil {
				return nil // interrupted
			}
			var ae *transport.APIError
			if errors.As(err, &ae) && ae.Code == transport.CodeFactsTrimmed {
				return fmt.Errorf("facts after seq %d were trimmed before this export read them (the oldest retained is %d): the export has a gap and stops; %w", after, ae.FirstSeq, err)
			}
			return err
		}
		for i := range p.Facts {
			f := &p.Facts[i]
			if f.Seq != after+1 {
				return fmt.Errorf("gap in the journal: seq %d follows %d; the export stops (nothing after %d was written)", f.Seq, after, after)
			}
			if err := e.write(f); err != nil {
				return err
			}
			after = f.Seq
		}
		if len(p.Facts) > 0 {
			// Durable here first, then acknowledged: a crash in between
			// only means the next run starts from the files.
			if err := e.sync(); err != nil {
				return err
			}
			ctx, cancel := call()
			_, err := x.client.AckConsumer(ctx, name, after, "")
			cancel()
			if err != nil {
				if base.Err() != nil {
					return nil
				}
				return fmt.Errorf("acknowledging seq %d: %w", after, err)
			}
			exported += len(p.Facts)
		}
		if time.Since(lastReport) >= time.Second || !p.More && len(p.Facts) > 0 {
			fmt.Fprintf(x.stderr, "export %s: %d facts this run, through seq %d of %d\n", dir, exported, after, p.LastSeq)
			lastReport = time.Now()
		}
		if p.More {
			continue
		}
		if !follow {
			fmt.Fprintf(x.stderr, "export %s: caught up at seq %d (%d facts this run)\n", dir, after, exported)
			return nil
		}
		select {
		case <-base.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func cursorOf(c *transport.ConsumerJSON) string {
	if c == nil {
		return "none: registering"
	}
	return strconv.FormatUint(c.Cursor, 10)
}

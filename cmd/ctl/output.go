package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/reconf/reconf/transport"
)

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// table is an aligned table on w: add rows, then flush.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(toAny(header)...)
	}
	return t
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// list joins a list for a table cell; "-" when empty.
func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func scopeString(s transport.ScopeJSON) string {
	if s.Session {
		return "session"
	}
	return "fragments[" + strings.Join(s.Fragments, ",") + "]"
}

func footprintSummary(f transport.FootprintJSON) string {
	return fmt.Sprintf("native=[%s] delegated_in=[%s] delegated_out=[%s]",
		strings.Join(f.NativeSessions, ","), strings.Join(f.DelegatedInSessions, ","), strings.Join(f.DelegatedOutSessions, ","))
}

func sessionCount(f *transport.FootprintJSON) int {
	if f == nil {
		return 0
	}
	return len(f.NativeSessions) + len(f.DelegatedInSessions) + len(f.DelegatedOutSessions)
}

func formatMillis(ms uint64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(int64(ms)).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func dedupedNote(d bool) string {
	if d {
		return " (retried request: the first answer is shown)"
	}
	return ""
}

// readInput reads a file argument; "-" is stdin.
func readInput(s *streams, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(s.stdin)
	}
	return os.ReadFile(name)
}

// decodeFile reads a JSON file (or stdin for "-") into v, refusing unknown
// fields so that a typo is caught here, not silently dropped. Errors are
// usage errors: the file is a flag's value.
func decodeFile(c *cli.Context, s *streams, flag, name string, v any) error {
	b, err := readInput(s, name)
	if err != nil {
		return usageErr(c, "--%s: %v", flag, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return usageErr(c, "--%s %s: invalid JSON: %v", flag, name, err)
	}
	if dec.More() {
		return usageErr(c, "--%s %s: unexpected data after the JSON value", flag, name)
	}
	return nil
}

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/reconf/reconf/internal/loadavg"
)

const fsyncHelp = `Measures how many fsyncs per second the disk under --dir does: one
goroutine appends a 4 KiB block to a new file and fsyncs it (Go's
File.Sync), over and over, for --duration, and prints the rate and the
latency of write+fsync. The file is truncated back to zero whenever it
reaches 64 MiB and removed at the end. With --overwrite every block is
written at offset 0 instead (no file growth, so no size update to sync).

A log store's append costs one (raft-wal) or two (raft-boltdb: data, then
meta page) such syncs, which bounds Raft commits per second when nothing
batches them.
`

type fsyncResult struct {
	Mode      string  `json:"mode"`
	Dir       string  `json:"dir"`
	BlockSize int     `json:"block_bytes"`
	Overwrite bool    `json:"overwrite"`
	Duration  float64 `json:"duration_s"`
	Fsyncs    uint64  `json:"fsyncs"`
	PerSec    float64 `json:"fsyncs_per_sec"`
	Latency   latency `json:"latency"`
	Machine   machine `json:"machine"`
}

func runFsync(ctx context.Context, args []string) error {
	fs := newFlags("fsync", fsyncHelp)
	dir := fs.String("dir", ".", "directory to write the test file in (must be on the disk to measure)")
	duration := fs.Duration("duration", 5*time.Second, "how long to measure")
	overwrite := fs.Bool("overwrite", false, "rewrite one block at offset 0 instead of appending")
	asJSON := fs.Bool("json", false, "print a JSON object instead of the human line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *duration <= 0 {
		return fmt.Errorf("--duration must be > 0")
	}
	warnIfRAM(*dir)
	m := newMachine()
	f, err := os.CreateTemp(*dir, "refbench-fsync-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()

	const block = 4096
	const wrapAt = 64 << 20
	buf := make([]byte, block)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	var lat []time.Duration
	var off int64
	start := time.Now()
	end := start.Add(*duration)
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		buf[0]++ // every block differs
		if *overwrite {
			_, err = f.WriteAt(buf, 0)
		} else {
			if off >= wrapAt {
				if err := f.Truncate(0); err != nil {
					return err
				}
				off = 0
			}
			_, err = f.WriteAt(buf, off)
			off += block
		}
		if err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		lat = append(lat, time.Since(t0))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted")
	}
	elapsed := time.Since(start)
	m.LoadAfter = loadavg.Read()
	r := fsyncResult{
		Mode: "fsync", Dir: *dir, BlockSize: block, Overwrite: *overwrite,
		Duration: elapsed.Seconds(), Fsyncs: uint64(len(lat)),
		PerSec: float64(len(lat)) / elapsed.Seconds(), Latency: summarize(lat), Machine: m,
	}
	how := "append"
	if *overwrite {
		how = "overwrite"
	}
	human := fmt.Sprintf("fsync dir=%s (4 KiB %s): %.0f fsyncs/s, p50 %.3f ms, p99 %.3f ms (%d in %.1f s%s)",
		*dir, how, r.PerSec, r.Latency.P50, r.Latency.P99, r.Fsyncs, r.Duration, loadNote(m))
	return emit(*asJSON, r, human)
}

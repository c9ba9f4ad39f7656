package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// checkBoltFile reads all of raft.db read-only, in a child process, before
// the node opens it for writing, and says what is wrong with a damaged file
// instead of letting bbolt fail on it inside this process. A truncated or
// partly overwritten file used to end in one of three ways (issue 12): a
// panic inside bbolt (on goroutines bbolt starts itself, so no recover can
// catch it), a SIGBUS from reading its memory map past the end of the file
// (a fatal signal, not a panic), or an endless walk of a page cycle that
// grew the heap without bound. A child process contains all three:
//
//   - it runs this same binary (os.Executable) with boltCheckEnv set; the
//     package's init sees it, checks the file and exits (boltCheckChild), so
//     any program that imports this package can check, tests included;
//   - its address space is capped (RLIMIT_AS) and it is killed after
//     timeout; a crash, a kill or a non-zero exit is a damaged file.
//
// It costs one process start and one read of the file (raft.db holds the
// log since the last snapshot plus the trailing entries: tens of MB).
func checkBoltFile(path string, timeout time.Duration) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil // no file yet, or one openBolt explains
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cluster: check %s: cannot find this program to run the check: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), boltCheckEnv+"="+path, fmt.Sprintf("%s=%d", boltCheckLimitEnv, boltCheckMemory(fi.Size())))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	msg := strings.TrimSpace(out.String())
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return corruptStore(path, fmt.Errorf("checking it did not finish within %s", timeout))
	case strings.HasPrefix(msg, boltLockedPrefix):
		return fmt.Errorf("cluster: %s is locked by another process: is another reconfd running on this data dir? (%s)", path, strings.TrimPrefix(msg, boltLockedPrefix))
	}
	if msg == "" {
		msg = err.Error()
	}
	return corruptStore(path, errors.New(firstLine(msg)))
}

const (
	boltCheckEnv      = "RECONF_INTERNAL_BOLT_CHECK"
	boltCheckLimitEnv = "RECONF_INTERNAL_BOLT_CHECK_LIMIT"
	boltLockedPrefix  = "locked: "
)

// boltCheckMemory is the address space the check may use: the file mapped,
// the check's page sets, the Go runtime.
func boltCheckMemory(size int64) int64 { return 3*size + 4<<30 }

// firstLine is the child's first line of output: its error, or the panic
// message of a crash (the stack that follows is bbolt's, not news).
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func init() {
	if path := os.Getenv(boltCheckEnv); path != "" {
		os.Exit(boltCheckChild(path))
	}
}

// boltCheckChild is the child's side: check path, print the first problem,
// exit status 0 (sound) or 1.
func boltCheckChild(path string) int {
	var limit int64
	fmt.Sscan(os.Getenv(boltCheckLimitEnv), &limit)
	if limit > 0 {
		_ = syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: uint64(limit), Max: uint64(limit)})
		debug.SetMemoryLimit(limit / 2)
	}
	debug.SetPanicOnFault(true)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		fmt.Fprintln(os.Stderr, boltLockedPrefix+err.Error())
		return 1
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			return err // the first problem is enough
		}
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

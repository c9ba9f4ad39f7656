package transport_test

import (
	"os"
	"path/filepath"
	"testing"
)

// The integration tests run on raft-boltdb by default. The same tests run
// on raft-wal with RECONF_TEST_LOG_STORE=wal:
//
//	RECONF_TEST_LOG_STORE=wal go test ./transport/
//
// and the default run covers the key fault scenarios on raft-wal through
// TestIntegrationOnWAL.

// TestIntegrationOnWAL runs the scenarios that exercise the log store hardest
// (a crashed leader, a restart from the data dir, a snapshot install that
// replaces the log) on clusters whose nodes use raft-wal.
func TestIntegrationOnWAL(t *testing.T) {
	if s := os.Getenv("RECONF_TEST_LOG_STORE"); s != "" {
		t.Skipf("this whole run uses RECONF_TEST_LOG_STORE=%s", s)
	}
	t.Setenv("RECONF_TEST_LOG_STORE", "wal")
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"LeaderKillKeepsAcknowledgedWrites", TestLeaderKillKeepsAcknowledgedWrites},
		{"RestartedFollowerCatchesUp", TestRestartedFollowerCatchesUp},
		{"SnapshotInstallOnJoin", TestSnapshotInstallOnJoin},
		{"BatchThroughLeaderChange", TestBatchThroughLeaderChange},
	} {
		t.Run(tc.name, tc.run)
	}
}

// checkLogStore fails the test unless a node's data dir holds the log store
// the cluster was asked for.
func checkLogStore(t testing.TB, dir, want string) {
	t.Helper()
	_, errBolt := os.Stat(filepath.Join(dir, "raft.db"))
	_, errWAL := os.Stat(filepath.Join(dir, "wal"))
	switch want {
	case "wal":
		if errWAL != nil || errBolt == nil {
			t.Fatalf("%s: want a raft-wal store only (wal/: %v, raft.db: %v)", dir, errWAL, errBolt)
		}
	case "", "bolt":
		if errBolt != nil || errWAL == nil {
			t.Fatalf("%s: want a bolt store only (raft.db: %v, wal/: %v)", dir, errBolt, errWAL)
		}
	}
}

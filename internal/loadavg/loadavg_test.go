package loadavg

import (
	"os"
	"regexp"
	"testing"
)

func TestRead(t *testing.T) {
	if _, err := os.Stat("/proc/loadavg"); err != nil {
		t.Skip("no /proc/loadavg here")
	}
	if got := Read(); !regexp.MustCompile(`^\d+\.\d+ \d+\.\d+ \d+\.\d+$`).MatchString(got) {
		t.Fatalf("Read() = %q, want three load averages", got)
	}
}

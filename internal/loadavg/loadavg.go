// Package loadavg reads the machine's load average, which every benchmark
// report carries: on a shared machine a figure means little without it.
package loadavg

import (
	"os"
	"strings"
)

// Read returns the 1, 5 and 15 minute load averages as "1.00 2.00 3.00",
// or "" where /proc/loadavg cannot be read.
func Read() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

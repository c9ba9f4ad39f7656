package transport

import (
	"testing"
	"time"
)

func TestJitterSpreadsBackoff(t *testing.T) {
	const d = 100 * time.Millisecond
	seen := map[time.Duration]bool{}
	for i := 0; i < 1000; i++ {
		j := jitter(d)
		if j < d/2 || j >= 3*d/2 {
			t.Fatalf("jitter(%v) = %v, outside [%v, %v)", d, j, d/2, 3*d/2)
		}
		seen[j] = true
	}
	if len(seen) < 100 {
		t.Fatalf("1000 backoffs took only %d distinct values", len(seen))
	}
}

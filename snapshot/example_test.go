package snapshot_test

import (
	"bytes"
	"fmt"
	"io"
	"log"

	"github.com/reconf/reconf/snapshot"
)

func Example() {
	var file bytes.Buffer

	// Persist: one section per part of the state.
	w, err := snapshot.NewWriter(&file, snapshot.Header{Index: 120, Term: 3})
	if err != nil {
		log.Fatal(err)
	}
	for _, part := range []struct{ name, data string }{
		{"sessions", "session state..."},
		{"fragments", "fragment state..."},
	} {
		sec, err := w.Section(part.name)
		if err != nil {
			log.Fatal(err)
		}
		if _, err := io.WriteString(sec, part.data); err != nil {
			log.Fatal(err)
		}
		if err := sec.Close(); err != nil {
			log.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	// Restore: build the new state on the side and adopt it only once
	// Next has returned io.EOF.
	r, err := snapshot.NewReader(&file)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("index %d term %d\n", r.Header().Index, r.Header().Term)
	staged := map[string][]byte{}
	for {
		name, sec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err) // discard staged: the snapshot is unusable
		}
		data, err := io.ReadAll(sec)
		if err != nil {
			log.Fatal(err)
		}
		staged[name] = data
	}
	fmt.Printf("adopting %d sections: %q\n", len(staged), staged["sessions"])
	// Output:
	// index 120 term 3
	// adopting 2 sections: "session state..."
}

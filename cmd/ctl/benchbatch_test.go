package main

import (
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/reconf/reconf/transport"
)

// randomBatchAnswer is a batch answer of n results as encoding/json writes
// it, with strings that need escaping and nested values of every kind.
func randomBatchAnswer(r *mrand.Rand, n int, indent bool) []byte {
	words := []string{"plain", `q"uote`, `back\slash`, `\"`, `\\`, "tab\t", "<html>&", "é", "}", "]", ",", "{\"status\":1}"}
	word := func() string { return words[r.IntN(len(words))] + words[r.IntN(len(words))] }
	var resp transport.BatchResponse
	for i := 0; i < n; i++ {
		var res transport.BatchResult
		if r.IntN(4) == 0 {
			res.Status = 400 + r.IntN(100)
			res.Error = &transport.ErrorDetail{Code: word(), Message: word()}
		} else {
			res.Status = 200
			v := map[string]any{"s": word(), "n": r.IntN(1000), "l": []any{word(), nil, true, 1.5, map[string]any{"x": []string{word()}}}}
			res.Result, _ = json.Marshal(v)
		}
		resp.Results = append(resp.Results, res)
	}
	var b []byte
	if indent {
		b, _ = json.MarshalIndent(resp, "", "  ")
	} else {
		b, _ = json.Marshal(resp)
	}
	return b
}

func TestScanBatchResultsAgreesWithEncodingJSON(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	for k := 0; k < 500; k++ {
		body := randomBatchAnswer(r, 1+r.IntN(20), k%2 == 1)
		var want transport.BatchResponse
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatal(err)
		}
		var got []string
		err := scanBatchResults(body, func(j, status int, result []byte) {
			s := fmt.Sprint(j, status)
			if status != 200 {
				s += " " + batchError(status, result).Error()
			}
			got = append(got, s)
		})
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		var exp []string
		for j, res := range want.Results {
			s := fmt.Sprint(j, res.Status)
			if res.Status != 200 {
				s += " " + (&transport.APIError{Status: res.Status, Code: res.Error.Code, Message: res.Error.Message}).Error()
			}
			exp = append(exp, s)
		}
		if !reflect.DeepEqual(got, exp) {
			t.Fatalf("%s:\ngot  %q\nwant %q", body, got, exp)
		}
	}
}

func TestScanBatchResultsRefusesOtherShapes(t *testing.T) {
	r := mrand.New(mrand.NewPCG(3, 4))
	body := randomBatchAnswer(r, 5, false)
	for _, bad := range []string{``, `{}`, `[]`, `{"results":{}}`, `{"results":[{"result":{}}]}`,
		`{"results":[{"status":"200"}]}`, `{"results":[{"status":200}]} x`, `{"results":[{"status":200},]}`,
		`{"x":1 "results":[{"status":200}]}`, `{"results":[{"status":200}],"results":[{"status":500}]}`,
		strings.Replace(string(body), `"status":200`, `"status":200,"status":200`, 1)} {
		if err := scanBatchResults([]byte(bad), func(int, int, []byte) {}); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	// Other members, before or after the results, are skipped.
	for _, good := range []string{`{"leader":"x","results":[{"status":200}]}`, `{"results":[{"status":200}],"n":[1,{"a":"]"}]}`} {
		n := 0
		if err := scanBatchResults([]byte(good), func(int, int, []byte) { n++ }); err != nil || n != 1 {
			t.Errorf("%s: %d results, %v", good, n, err)
		}
	}
	// Every truncation of a good answer is refused, and none panics.
	for i := 0; i < len(body); i++ {
		if err := scanBatchResults(body[:i], func(int, int, []byte) {}); err == nil {
			t.Errorf("truncated at %d: accepted %s", i, body[:i])
		}
	}
}

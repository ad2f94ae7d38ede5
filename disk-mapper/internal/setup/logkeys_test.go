package setup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/cloister-dev/cloister/internal/status"
)

// checkUniqueKeys fails the test if any JSON log line in logs has a key
// twice at its top level. slog's JSON handler writes both copies when a
// logger and its child add the same key ("component"); JSON decoders then
// silently keep one of them.
func checkUniqueKeys(tb testing.TB, logs []byte) {
	tb.Helper()
	sc := bufio.NewScanner(bytes.NewReader(logs))
	n := 0
	for sc.Scan() {
		n++
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			tb.Fatalf("log line %d is not a JSON object: %s", n, sc.Bytes())
		}
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				tb.Fatalf("log line %d: %v", n, err)
			}
			key := tok.(string)
			if seen[key] {
				tb.Errorf("log line %d has key %q twice: %s", n, key, sc.Bytes())
			}
			seen[key] = true
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				tb.Fatalf("log line %d: %v", n, err)
			}
		}
	}
	if n == 0 {
		tb.Fatal("no log lines to check")
	}
}

// TestLogLinesHaveUniqueKeys runs a fresh disk through the flow with a
// logger built as disk-mapper's main builds it (the daemon's name under
// "service") and checks every JSON line it wrote for duplicate keys.
func TestLogLinesHaveUniqueKeys(t *testing.T) {
	var logs bytes.Buffer
	tf := newTestFlowWith(t, &fakeLatch{}, status.New("disk-mapper", status.Options{}), &logs, map[string]KeySource{"fake": &fakeSource{}}, nil)
	tf.flow.log = slog.New(slog.NewJSONHandler(&logs, nil)).With("service", "disk-mapper", "node", "n1").With("component", "setup")
	if _, err := tf.flow.Run(context.Background(), newImage(t)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	checkUniqueKeys(t, logs.Bytes())

	// The check itself catches what the daemons used to write.
	var dup bytes.Buffer
	slog.New(slog.NewJSONHandler(&dup, nil)).With("component", "disk-mapper").With("component", "recovery").Info("x")
	if !hasDuplicateKey(dup.Bytes()) {
		t.Fatalf("checkUniqueKeys would miss %s", dup.Bytes())
	}
}

func hasDuplicateKey(line []byte) bool {
	var kv []string
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.Token()
	for dec.More() {
		tok, _ := dec.Token()
		kv = append(kv, tok.(string))
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	seen := map[string]bool{}
	for _, k := range kv {
		if seen[k] {
			return true
		}
		seen[k] = true
	}
	return false
}

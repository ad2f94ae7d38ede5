package provision

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadRefusesAmbiguousFiles: the saved ticket and init inputs are
// decoded strictly. encoding/json alone took "DiskKey" for diskKey and kept
// the last of two spellings, so a file could carry two disk keys.
func TestLoadRefusesAmbiguousFiles(t *testing.T) {
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=" // never in an error
	tests := []struct{ name, doc, want string }{
		{"case variant of a field", `{"diskKey":"` + secret + `","DiskKey":"` + secret + `"}`, `unknown field "DiskKey" (field names are case-sensitive: did you mean "diskKey"?)`},
		{"duplicate key", `{"diskKey":"` + secret + `","diskKey":"` + secret + `"}`, `(document): duplicate key "diskKey"`},
		{"duplicate nested key", `{"kubeadm":{"NodeName":"a","NodeName":"b"}}`, `kubeadm: duplicate key "NodeName"`},
		{"case variant of a nested field", `{"kubeadm":{"NodeName":"a","nodename":"b"}}`, `kubeadm: unknown field "nodename"`},
		{"YAML, not JSON", "diskKey: " + secret + "\n", "malformed"},
		{"wrong type of a secret", `{"diskKey":"` + secret + `!"}`, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), TicketFile)
			if err := os.WriteFile(path, []byte(tt.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			var tk Ticket
			err := load(path, &tk)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret[:16]) {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
}

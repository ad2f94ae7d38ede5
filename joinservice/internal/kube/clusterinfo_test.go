package kube

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestParseClusterInfo: cluster-info's kubeconfig is read as kubeadm join
// reads it (unknown fields allowed, field names case-sensitive) after
// ambiguous keys are refused. sigs.k8s.io/yaml, used before, matched
// "Server" to server and kept the last of two keys, so the join service
// could hand out an endpoint or CA pins other than those kubeadm on the node
// reads from the same document.
func TestParseClusterInfo(t *testing.T) {
	ca := base64.StdEncoding.EncodeToString(newTestCA(t, "kubernetes").pem)
	other := base64.StdEncoding.EncodeToString(newTestCA(t, "other").pem)
	head := "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n"
	tests := []struct {
		name, doc  string
		wantServer string // "" means an error is wanted
		wantErr    string
	}{
		{name: "as kubeadm writes it", doc: head + "    certificate-authority-data: " + ca + "\n    server: https://10.0.0.1:6443\ncontexts: null\npreferences: {}\n", wantServer: "https://10.0.0.1:6443"},
		{name: "fields we do not model are kubeadm's", doc: head + "    certificate-authority-data: " + ca + "\n    server: https://10.0.0.1:6443\n    tls-server-name: kubernetes\n    extensions: []\nusers: []\n", wantServer: "https://10.0.0.1:6443"},
		{name: "case variant is not the field, as for kubeadm", doc: head + "    certificate-authority-data: " + ca + "\n    server: https://10.0.0.1:6443\n    Server: https://10.6.6.6:6443\n", wantServer: "https://10.0.0.1:6443"},
		{name: "server given twice", doc: head + "    certificate-authority-data: " + ca + "\n    server: https://10.0.0.1:6443\n    server: https://10.6.6.6:6443\n", wantErr: `clusters[0].cluster: duplicate key "server"`},
		{name: "CA given twice", doc: head + "    certificate-authority-data: " + ca + "\n    certificate-authority-data: " + other + "\n    server: https://10.0.0.1:6443\n", wantErr: `clusters[0].cluster: duplicate key "certificate-authority-data"`},
		{name: "two clusters of one name", doc: head + "    server: https://10.0.0.1:6443\n- name: \"\"\n  cluster:\n    server: https://10.6.6.6:6443\n", wantErr: "clusters: want 1 cluster, got 2"},
		{name: "alias", doc: "clusters:\n- &c {name: a, cluster: {server: https://10.0.0.1:6443}}\nother: *c\n", wantErr: "anchors are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, caPEM, err := parseClusterInfo([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseClusterInfo = %q, %v; want an error naming %s", server, err, tt.wantErr)
				}
				return
			}
			if err != nil || server != tt.wantServer || len(caPEM) == 0 {
				t.Fatalf("parseClusterInfo = %q, %d CA bytes, %v; want %q", server, len(caPEM), err, tt.wantServer)
			}
		})
	}
}

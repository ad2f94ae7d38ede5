package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "joinservice.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDefaultsAndOverrides(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if c.Listen != ":9000" || c.BootstrapTokenTTL.Duration != 15*time.Minute {
		t.Errorf("defaults: %+v", c)
	}
	c, err = Load(write(t, "listen: 127.0.0.1:7000\nbootstrapTokenTTL: 5m\ntrust: {tpmEKRoots: [/etc/ek.pem]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7000" || c.BootstrapTokenTTL.Duration != 5*time.Minute || c.Trust.TPMEKRoots[0] != "/etc/ek.pem" {
		t.Errorf("overrides: %+v", c)
	}
	if c.ClusterSecrets != DefaultClusterSecrets {
		t.Errorf("clusterSecrets default %q", c.ClusterSecrets)
	}
	if c, err := Load(write(t, "clusterSecretsSecret: kube-system/cloister")); err != nil || c.ClusterSecrets != "" {
		t.Errorf("a Secret source must replace the default file: %+v, %v", c, err)
	}
	if c.MetricsListen != ":9091" {
		t.Error("an override dropped an unrelated default")
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown field", "lisen: :9000", `unknown field "lisen"`},
		// sigs.k8s.io/yaml accepted the next three, the last spelling
		// winning: a case variant could lift a limit or turn a switch on.
		{"case variant of a field", "Listen: :7000", `unknown field "Listen" (field names are case-sensitive: did you mean "listen"?)`},
		{"case variant beside a nested field", "rateLimit: {callBurst: 20, CallBurst: 100000}", `rateLimit: unknown field "CallBurst"`},
		{"duplicate key", `{"diskKeyGeneration": 2, "diskKeyGeneration": 1}`, `duplicate key "diskKeyGeneration"`},
		{"bad duration", "requestTimeout: soon", "requestTimeout"},
		{"negative duration", "requestTimeout: -1s", "requestTimeout: must be positive"},
		{"listen without port", "listen: localhost", "listen: want host:port"},
		{"token ttl too long", "bootstrapTokenTTL: 48h", "bootstrapTokenTTL: at most 24h"},
		{"zero rate", "rateLimit: {connectionsPerSecond: 0, connectionBurst: 1, callsPerSecond: 1, callBurst: 1}", "rateLimit"},
		{"empty policy path", "policy: ''", "policy: missing"},
		{"control-plane joins without a certificate key", "allowControlPlaneJoins: true", "certificateKeyFile: required"},
		{"two secrets sources", "clusterSecrets: /s.json\nclusterSecretsSecret: kube-system/x", "not both"},
		{"secret without namespace", "clusterSecretsSecret: x", "want namespace/name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(write(t, tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to name %q", err, tt.want)
			}
		})
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}

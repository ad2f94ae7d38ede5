package discovery

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// oemStrings builds a raw SMBIOS type 11 structure as QEMU writes it for
// "-smbios type=11,value=a,value=b".
func oemStrings(strs ...string) []byte {
	raw := []byte{smbiosOEMStrings, 5, 0x00, 0x0b, byte(len(strs))}
	for _, s := range strs {
		raw = append(append(raw, s...), 0)
	}
	if len(strs) == 0 {
		raw = append(raw, 0)
	}
	return append(raw, 0)
}

func writeEntries(t *testing.T, entries ...[]byte) string {
	t.Helper()
	root := t.TempDir()
	for i, raw := range entries {
		d := filepath.Join(root, "11-"+string(rune('0'+i)))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "raw"), raw, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	// Other structure types sit next to them and are ignored.
	if err := os.MkdirAll(filepath.Join(root, "1-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestCmdline(t *testing.T) {
	c, err := ParseCmdline(`BOOT_IMAGE=/vmlinuz root=/dev/vda1 quiet cloister.join=10.0.2.2:9000,cp.example.com:9000 cloister.role=control-plane cloister.node="node-1" cloister.other=x`)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.JoinEndpoints, []string{"10.0.2.2:9000", "cp.example.com:9000"}) || c.Role != RoleControlPlane || c.NodeName != "node-1" {
		t.Fatalf("config %+v", c)
	}
}

func TestCmdlineDefaultsRoleToWorker(t *testing.T) {
	c, err := ParseCmdline("cloister.node=w1 cloister.join=[fd00::1]:9000\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Role != RoleWorker || c.JoinEndpoints[0] != "[fd00::1]:9000" {
		t.Fatalf("config %+v", c)
	}
}

func TestCmdlineWithoutCloisterKeysIsNotConfigured(t *testing.T) {
	if _, err := ParseCmdline("root=/dev/vda quiet"); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
}

func TestBadValuesNameSourceAndKey(t *testing.T) {
	cases := []struct {
		name, cmdline, wantKey string
	}{
		{"endpoint without port", "cloister.node=n cloister.join=10.0.0.1", KeyJoin},
		{"port out of range", "cloister.node=n cloister.join=10.0.0.1:70000", KeyJoin},
		{"port not a number", "cloister.node=n cloister.join=10.0.0.1:http", KeyJoin},
		{"empty endpoint in list", "cloister.node=n cloister.join=10.0.0.1:9000,", KeyJoin},
		{"host with a slash", "cloister.node=n cloister.join=a/b:9000", KeyJoin},
		{"endpoint listed twice", "cloister.node=n cloister.join=a:1,a:1", KeyJoin},
		{"too many endpoints", "cloister.node=n cloister.join=" + strings.Repeat("a:1,", 16) + "b:1", KeyJoin},
		{"unknown role", "cloister.node=n cloister.role=admin", KeyRole},
		{"uppercase node name", "cloister.node=Node1", KeyNode},
		{"node name with underscore", "cloister.node=node_1", KeyNode},
		{"node name too long", "cloister.node=" + strings.Repeat("a", 254), KeyNode},
		{"label too long", "cloister.node=" + strings.Repeat("a", 64) + ".b", KeyNode},
		{"missing node name", "cloister.role=worker", KeyNode},
		{"key given twice", "cloister.node=a cloister.node=b", KeyNode},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCmdline(tc.cmdline)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if c != nil {
				t.Fatal("config returned with an error")
			}
			if errors.Is(err, ErrNotConfigured) {
				t.Fatalf("err = %v: a bad value is not 'not configured'", err)
			}
			// The message names the source and the key for the operator.
			if msg := err.Error(); !strings.Contains(msg, "kernel command line") || !strings.Contains(msg, tc.wantKey) {
				t.Fatalf("error %q does not name the source and %s", msg, tc.wantKey)
			}
		})
	}
}

func TestSMBIOSFromQEMUStyleEntries(t *testing.T) {
	root := writeEntries(t,
		oemStrings("cloister.join=10.0.2.2:9000", "cloister.role=worker"),
		oemStrings("unrelated vendor string", "cloister.node=worker-7"),
	)
	c, err := SMBIOS{Root: root}.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.JoinEndpoints, []string{"10.0.2.2:9000"}) || c.Role != RoleWorker || c.NodeName != "worker-7" || c.Source != "SMBIOS OEM strings" {
		t.Fatalf("config %+v", c)
	}
}

func TestSMBIOSWithoutEntriesIsNotConfigured(t *testing.T) {
	if _, err := (SMBIOS{Root: t.TempDir()}).Discover(context.Background()); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
}

func TestParseSMBIOSRefusesMalformed(t *testing.T) {
	good := oemStrings("a=b", "c=d")
	cases := []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"short header", good[:4]},
		{"wrong type", append([]byte{1}, good[1:]...)},
		{"length below header", append([]byte{11, 4}, good[2:]...)},
		{"length beyond data", append([]byte{11, 200}, good[2:]...)},
		{"count too high", append([]byte{11, 5, 0, 0, 3}, good[5:]...)},
		{"count too low", append([]byte{11, 5, 0, 0, 1}, good[5:]...)},
		{"last string unterminated", []byte{11, 5, 0, 0, 1, 'a', '=', 'b'}},
		{"table not terminated", []byte{11, 5, 0, 0, 1, 'a', 0}},
		{"empty table with one NUL", []byte{11, 5, 0, 0, 0, 0}},
		{"oversized", append(oemStrings(), make([]byte, maxSMBIOSEntry)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strs, err := ParseSMBIOS(tc.raw); err == nil {
				t.Fatalf("accepted: %q", strs)
			}
		})
	}
	strs, err := ParseSMBIOS(good)
	if err != nil || !slices.Equal(strs, []string{"a=b", "c=d"}) {
		t.Fatalf("good structure: %q, %v", strs, err)
	}
	if strs, err := ParseSMBIOS(oemStrings()); err != nil || len(strs) != 0 {
		t.Fatalf("empty table: %q, %v", strs, err)
	}
}

func TestSMBIOSBadEntryNamesIt(t *testing.T) {
	root := writeEntries(t, []byte{11, 5, 0, 0, 9, 'x', 0, 0})
	_, err := SMBIOS{Root: root}.Discover(context.Background())
	if err == nil || errors.Is(err, ErrNotConfigured) || !strings.Contains(err.Error(), "11-0") {
		t.Fatalf("err = %v, want an error naming entry 11-0", err)
	}
}

func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bootstrapper.yaml")
	if err := os.WriteFile(path, []byte("joinEndpoints: [\"10.0.0.1:9000\"]\nrole: control-plane\nnodeName: cp-2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := File{Path: path}.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "cp-2" || c.Role != RoleControlPlane || c.Source != path {
		t.Fatalf("config %+v", c)
	}
	for name, tt := range map[string]struct{ doc, want string }{
		"unknown field": {"nodeName: a\nextra: 1\n", `unknown field "extra"`},
		"bad role":      {"nodeName: a\nrole: boss\n", "role"},
		"bad endpoint":  {"nodeName: a\njoinEndpoints: [\"x\"]\n", "joinEndpoints"},
		// sigs.k8s.io/yaml accepted these, the last spelling winning.
		"case variant of a field":     {"nodeName: a\nRole: control-plane\n", `unknown field "Role" (field names are case-sensitive`},
		"case variant beside a field": {"nodeName: a\nNodeName: b\n", `unknown field "NodeName"`},
		"duplicate key":               {`{"nodeName": "a", "nodeName": "b"}`, `duplicate key "nodeName"`},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := ParseFile("f.yaml", []byte(tt.doc))
			if err == nil || c != nil || !strings.Contains(err.Error(), "f.yaml") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseFile = %+v, %v; want an error naming the file and %s", c, err, tt.want)
			}
		})
	}
	if _, err := (File{Path: filepath.Join(t.TempDir(), "missing")}).Discover(context.Background()); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("missing file: %v, want ErrNotConfigured", err)
	}
}

func TestFirstTakesTheFirstConfiguredSource(t *testing.T) {
	dir := t.TempDir()
	cmdline := filepath.Join(dir, "cmdline")
	if err := os.WriteFile(cmdline, []byte("quiet cloister.node=from-cmdline\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	empty := SMBIOS{Root: t.TempDir()}
	c, err := First{empty, Cmdline{Path: cmdline}, File{Path: filepath.Join(dir, "none")}}.Discover(context.Background())
	if err != nil || c.NodeName != "from-cmdline" {
		t.Fatalf("First = %+v, %v", c, err)
	}
	if _, err := (First{empty}).Discover(context.Background()); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("no source configured: %v", err)
	}
	// A source that says something wrong stops the search.
	bad := writeEntries(t, oemStrings("cloister.role=boss", "cloister.node=x"))
	if _, err := (First{SMBIOS{Root: bad}, Cmdline{Path: cmdline}}).Discover(context.Background()); err == nil || errors.Is(err, ErrNotConfigured) {
		t.Fatalf("bad SMBIOS: %v, want its error", err)
	}
}

func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"cloister.join=10.0.2.2:9000 cloister.role=worker cloister.node=n1",
		`quiet cloister.node="a b" cloister.join=[::1]:1,h:2`,
		"cloister.node=a cloister.node=b",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		if c.NodeName == "" || (c.Role != RoleWorker && c.Role != RoleControlPlane) || len(c.JoinEndpoints) > maxEndpoints {
			t.Fatalf("accepted an invalid config: %+v", c)
		}
	})
}

func FuzzParseSMBIOS(f *testing.F) {
	f.Add(oemStrings("cloister.join=10.0.2.2:9000", "cloister.node=n"))
	f.Add(oemStrings())
	f.Add([]byte{11, 5, 0, 0, 1, 'a', 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		strs, err := ParseSMBIOS(raw)
		if err != nil {
			if strs != nil {
				t.Fatal("strings returned with an error")
			}
			return
		}
		if len(strs) != int(raw[4]) {
			t.Fatalf("%d strings, header says %d", len(strs), raw[4])
		}
		for _, s := range strs {
			if s == "" || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("bad string %q", s)
			}
		}
	})
}

func BenchmarkParseCmdline(b *testing.B) {
	line := "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet cloister.join=10.0.2.2:9000,10.0.2.3:9000 cloister.role=worker cloister.node=worker-1"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCmdline(line); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseSMBIOS(b *testing.B) {
	raw := oemStrings("cloister.join=10.0.2.2:9000", "cloister.role=worker", "cloister.node=worker-1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSMBIOS(raw); err != nil {
			b.Fatal(err)
		}
	}
}

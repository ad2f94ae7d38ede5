package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cloister-dev/cloister/internal/keys"
)

const (
	testDiskUUID  = "2f1c0a8e-5b7d-4c1e-9a3f-6d2b8e4c1a70"
	otherDiskUUID = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
)

// TestRecover sends a disk key to a FAKE recovery service (accepting one
// key) behind real attested TLS, and checks that the request carries the
// key derived for that disk and the measurement secret, and nothing else.
func TestRecover(t *testing.T) {
	dir, secrets := newClusterDir(t)
	key, err := secrets.DiskKey(testDiskUUID, keys.FirstGeneration)
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeRecoveryServer{diskUUID: testDiskUUID, key: key}
	node := startTPMNode(t, nodeServices{recovery: fake})
	node.tracker.SetPhase("waiting-for-key")
	pol := writeTPMPolicy(t, "recover", map[int]pcrPolicy{0: {value: node.pcrs(t)[0]}})
	recoverArgs := func(uuid string, extra ...string) []string {
		return append(append([]string{"recover", "--cluster-dir", dir, "--disk-uuid", uuid}, node.trustArgs(pol)...), extra...)
	}

	r := runCLI(t, recoverArgs(testDiskUUID)...)
	r.wantCode(t, exitOK)
	if r.stdout != testDiskUUID+"\n" {
		t.Errorf("stdout = %q, want the disk UUID", r.stdout)
	}
	reqs := fake.requests()
	if len(reqs) != 1 {
		t.Fatalf("node got %d requests, want 1", len(reqs))
	}
	req := reqs[0]
	if !bytes.Equal(req.GetDiskKey(), key) || !bytes.Equal(req.GetMeasurementSecret(), secrets.MeasurementSecret) || req.GetDiskKeyGeneration() != keys.FirstGeneration {
		t.Fatal("request does not carry the disk's key and the measurement secret")
	}
	// Nothing else: only these fields are set, and the wire bytes hold
	// neither the master secret nor its salt.
	var fields []string
	req.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		fields = append(fields, string(fd.Name()))
		return true
	})
	if slices.Sort(fields); strings.Join(fields, ",") != "disk_key,disk_key_generation,measurement_secret" {
		t.Errorf("request fields = %v", fields)
	}
	wire, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(wire, secrets.MasterSecret) || bytes.Contains(wire, secrets.MasterSalt) || bytes.Contains(wire, secrets.MeasurementSalt) {
		t.Fatal("the request carries a cluster secret other than the measurement secret")
	}

	t.Run("key for another disk is refused", func(t *testing.T) {
		r := runCLI(t, recoverArgs(otherDiskUUID)...)
		r.wantCode(t, exitNodeRefused)
		if !strings.Contains(r.stderr, "refused the key for disk "+otherDiskUUID) || !strings.Contains(r.stderr, "hint: check --disk-uuid") {
			t.Errorf("stderr:\n%s", r.stderr)
		}
	})
	t.Run("another generation's key is refused", func(t *testing.T) {
		r := runCLI(t, recoverArgs(testDiskUUID, "--generation", "2")...)
		r.wantCode(t, exitNodeRefused)
		if got := fake.requests(); got[len(got)-1].GetDiskKeyGeneration() != 2 {
			t.Errorf("generation sent = %d, want 2", got[len(got)-1].GetDiskKeyGeneration())
		}
	})
	t.Run("node reports another disk: no key sent", func(t *testing.T) {
		node.tracker.SetDiskUUID(testDiskUUID)
		n := len(fake.requests())
		r := runCLI(t, recoverArgs(otherDiskUUID)...)
		r.wantCode(t, exitUsage)
		if !strings.Contains(r.stderr, "not sending the key") || len(fake.requests()) != n {
			t.Errorf("%s", r)
		}
	})
	t.Run("node fails the policy: no key sent", func(t *testing.T) {
		n := len(fake.requests())
		bad := writeTPMPolicy(t, "bad", map[int]pcrPolicy{4: {value: wrongPCR}})
		r := runCLI(t, "recover", "--cluster-dir", dir, "--disk-uuid", testDiskUUID, "--node", node.addr, "--policy", bad, "--tpm-ak-roots", node.caFile)
		r.wantCode(t, exitRefused)
		if len(fake.requests()) != n {
			t.Error("a key was sent to a refused node")
		}
	})
	t.Run("disk UUID not canonical", func(t *testing.T) {
		r := runCLI(t, recoverArgs(strings.ToUpper(testDiskUUID))...)
		r.wantCode(t, exitUsage)
	})
}

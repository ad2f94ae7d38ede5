package hostdemo

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/platform"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
	"github.com/cloister-dev/cloister/internal/attestation/tpm/tpmtest"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/latch"
	"github.com/cloister-dev/cloister/joinservice/jointest"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// measuredPCRs are the boot PCRs the demo policy pins.
var measuredPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

const nodeName = "demo-worker"

// TB is what Run needs of testing.TB: the test-support packages it borrows
// (swtpm, the in-process join service) report through it. *testing.T
// satisfies it; the demo command has its own.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// Refusal is a refusal the walk-through expects, as the join service
// recorded it.
type Refusal struct {
	// Step is the walk-through's step.
	Step int
	// Code is the gRPC code the node got.
	Code codes.Code
	// Stage and Check are the join service's rejection metric labels:
	// the stage ("attestation" in the handshake, "request" in a handler)
	// and the failed check.
	Stage, Check string
}

func (r Refusal) String() string {
	return fmt.Sprintf("step %d: %s, %s check %s", r.Step, r.Code, r.Stage, r.Check)
}

// Expected are the refusals of the walk-through, in order: a second join in
// the same boot trips the latch, a boot with a modified boot loader fails
// the policy's PCR 4. The second is a refusal in the attested handshake,
// which gRPC reports to the client as a connection error (Unavailable, the
// server's reason in the message); the join service's count of the check
// is what tells it from a network error or a broken TPM session.
var Expected = []Refusal{
	{Step: 7, Code: codes.PermissionDenied, Stage: "request", Check: "latch"},
	{Step: 8, Code: codes.Unavailable, Stage: "attestation", Check: "pcr[4]"},
}

// Result is what a walk-through that passed observed.
type Result struct {
	// Refusals are the refusals as they happened; Run has checked each
	// against Expected.
	Refusals []Refusal
	// RecoveredKeyslot is the keyslot the key of the genuine reboot opened.
	RecoveredKeyslot int
}

// Run walks through the node's path and writes each step to out. It fails
// when any step does not do what the walk-through says, a refusal included:
// a refusal for another reason than the documented one is an error.
func Run(ctx context.Context, tb TB, out io.Writer) (*Result, error) {
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	step := func(n int, title string) { say("\n[%d] %s", n, title) }
	res := &Result{}

	say("Cloister demo — a confidential node joins, locks its disk, reboots and recovers.")
	say("Real here: TPM 2.0 (swtpm), attested TLS, the join service, LUKS2 (libcryptsetup).")
	say("Faked here: the Kubernetes API (client-go fake); the disk is a file image (no device-mapper on this host).")

	step(1, "Two machines boot, each with its own vTPM and an EK certificate from its manufacturer CA")
	nodeTPM := tpmtest.StartSwtpm(tb)
	service := tpmtest.StartSwtpm(tb)
	serviceIssuer, err := tpm.NewIssuer(service.RW, tpm.IssuerOptions{EKIntermediates: service.EKIntermediates})
	if err != nil {
		return nil, fmt.Errorf("join service issuer: %w", err)
	}
	tb.Cleanup(func() { serviceIssuer.Close() })
	say("    node TPM and join-service TPM ready")

	step(2, "The operator pins the node image's boot measurements (PCRs 0-7) in the cluster policy")
	nodePolicy := policyFor(tpmtest.PCRs(tb, nodeTPM.RW), "demo-nodes")
	servicePolicy := policyFor(tpmtest.PCRs(tb, service.RW), "demo-control-plane")
	say("    (swtpm boots no firmware, so these PCRs are at their reset value here; on a real node")
	say("    OVMF and the image fill them, and the policy comes from the image build)")
	say("%s", indent(nodePolicy))

	step(3, "The join service starts: it attests itself, verifies every node, derives keys")
	svc := jointest.Start(tb, jointest.Options{
		Issuer: serviceIssuer,
		Build: func(p *policy.Policy) (attestation.Validators, error) {
			return platform.Validators(p, platform.Anchors{TPMEKRoots: nodeTPM.EKRoots})
		},
		Policy: []byte(nodePolicy),
	})
	say("    listening on %s (mutual attested TLS, TLS 1.3)", svc.Addr)
	serviceValidators, err := validatorsFor(servicePolicy, service)
	if err != nil {
		return nil, err
	}
	node, err := powerOn(nodeTPM, serviceValidators)
	if err != nil {
		return nil, err
	}
	tb.Cleanup(func() { node.shutdown() })

	step(4, "disk-mapper on the node: a fresh state disk is formatted LUKS2 with a one-time passphrase")
	diskPath := filepath.Join(tb.TempDir(), "state-disk.img")
	if err := os.WriteFile(diskPath, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(diskPath, 32<<20); err != nil {
		return nil, err
	}
	oneTime := make([]byte, cryptsetup.PassphraseSize)
	if _, err := rand.Read(oneTime); err != nil {
		return nil, err
	}
	diskUUID, err := cryptsetup.Format(ctx, diskPath, oneTime, cryptsetup.FormatOptions{})
	if err != nil {
		return nil, fmt.Errorf("formatting the state disk: %w", err)
	}
	say("    LUKS2 aes-xts-plain64, 512-bit key, 4096-byte sectors; disk UUID %s", diskUUID)

	step(5, "bootstrapper on the node: mutual attestation with the join service, then IssueJoinTicket")
	ticket, err := join(ctx, svc.Addr, node.boot.creds, diskUUID)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	say("    ticket for %s: disk key (generation %d, %s), bootstrap token %s.REDACTED valid until %s,",
		nodeName, ticket.GetDiskKeyGeneration(), keys.Secret(ticket.GetDiskKey()), strings.SplitN(ticket.GetBootstrapToken(), ".", 2)[0],
		time.Unix(ticket.GetBootstrapTokenExpiry(), 0).UTC().Format(time.TimeOnly))
	say("    kubelet certificate for %s, CA pins %v", certSubject(ticket.GetKubeletCertificate()), ticket.GetDiscoveryTokenCaCertHashes())

	step(6, "The node re-keys its disk to the derived key and extends its cluster-ID latch (PCR 15)")
	dev, err := cryptsetup.Open(diskPath, cryptsetup.FormatOptions{})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	if err := dev.Rekey(ctx, oneTime, ticket.GetDiskKey(), ticket.GetDiskKeyGeneration()); err != nil {
		return nil, fmt.Errorf("re-keying: %w", err)
	}
	if _, err := dev.CheckKey(oneTime); err == nil {
		return nil, fmt.Errorf("the one-time passphrase still opens the disk")
	}
	clusterID, err := keys.ClusterID(ticket.GetMeasurementSecret(), ticket.GetMeasurementSalt())
	if err != nil {
		return nil, err
	}
	nodeLatch := latch.NewTPM(nodeTPM.RW)
	if err := nodeLatch.Extend(ctx, clusterID); err != nil {
		return nil, err
	}
	latched, err := nodeLatch.Value(ctx)
	if err != nil {
		return nil, err
	}
	say("    the one-time passphrase no longer opens the disk; the derived key does")
	say("    PCR 15 = %s (cluster ID %s…)", short(latched), hex.EncodeToString(clusterID[:6]))

	step(7, "A second join in the same boot is refused: the latch is no longer at its reset value")
	r, err := refusal(svc, Expected[0], func() error {
		_, err := join(ctx, svc.Addr, node.boot.creds, diskUUID)
		return err
	})
	if err != nil {
		return nil, err
	}
	res.Refusals = append(res.Refusals, r)
	say("    refused by the %s check", r.Check)

	step(8, "The node reboots with a modified boot loader (firmware measures something else into PCR 4)")
	if err := node.reboot(modifiedBootLoader); err != nil {
		return nil, err
	}
	r, err = refusal(svc, Expected[1], func() error {
		_, err := rejoin(ctx, svc.Addr, node.boot.creds, diskUUID)
		return err
	})
	if err != nil {
		return nil, err
	}
	res.Refusals = append(res.Refusals, r)
	say("    rejoin refused in the attested handshake by the %s check", r.Check)

	step(9, "The node reboots with the genuine image: disk-mapper asks again and gets its key back")
	if err := node.reboot(nil); err != nil {
		return nil, err
	}
	again, err := rejoin(ctx, svc.Addr, node.boot.creds, diskUUID)
	if err != nil {
		return nil, fmt.Errorf("rejoin after a genuine reboot: %w", err)
	}
	if res.RecoveredKeyslot, err = dev.CheckKey(again.GetDiskKey()); err != nil {
		return nil, fmt.Errorf("the rejoin key does not open the disk: %w", err)
	}
	salt := ticket.GetMeasurementSalt() // read from the unlocked disk on a real node
	id, err := keys.ClusterID(again.GetMeasurementSecret(), salt)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(id, clusterID) {
		return nil, fmt.Errorf("cluster ID after the reboot: want %x, got %x", clusterID, id)
	}
	if err := nodeLatch.Extend(ctx, id); err != nil {
		return nil, err
	}
	say("    the key opens keyslot %d of disk %s; PCR 15 latched to the same cluster again", res.RecoveredKeyslot, diskUUID)

	step(10, "What the join service recorded")
	for _, line := range strings.Split(svc.Logs(), "\n") {
		if strings.Contains(line, `"audit":true`) {
			say("    %s", auditSummary(line))
		}
	}
	say("\nDone: attested join, disk re-keyed, double join refused (latch), tampered boot refused (pcr[4]), genuine reboot recovered.")
	return res, nil
}

// modifiedBootLoader is the firmware of a tampered boot: it measures another
// boot loader into PCR 4.
func modifiedBootLoader(rw io.ReadWriter) error {
	digest := sha256.Sum256([]byte("a boot loader the policy does not know"))
	return tpm2.PCRExtend(rw, tpmutil.Handle(4), tpm2.AlgSHA256, digest[:], "")
}

// rejections reads the join service's rejection counters, keyed
// "stage/check".
func rejections(svc *jointest.Service) (map[string]float64, error) {
	families, err := svc.Metrics.Registry().Gather()
	if err != nil {
		return nil, fmt.Errorf("reading the join service's metrics: %w", err)
	}
	out := make(map[string]float64)
	for _, f := range families {
		if f.GetName() != "cloister_joinservice_rejections_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := make(map[string]string)
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["stage"]+"/"+labels["reason"]] = m.GetCounter().GetValue()
		}
	}
	return out, nil
}

// refusal runs call and checks that it is refused as want says: with want's
// gRPC code, and counted by the join service as exactly one new rejection,
// want's check at want's stage. A refusal for any other reason (a TPM
// session that broke, a network error, another check) is an error that
// names both.
func refusal(svc *jointest.Service, want Refusal, call func() error) (Refusal, error) {
	before, err := rejections(svc)
	if err != nil {
		return Refusal{}, err
	}
	callErr := call()
	after, err := rejections(svc)
	if err != nil {
		return Refusal{}, err
	}
	var counted []string
	got := Refusal{Step: want.Step, Code: status.Code(callErr)}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			counted = append(counted, fmt.Sprintf("%s +%v", k, d))
			got.Stage, got.Check, _ = strings.Cut(k, "/")
		}
	}
	sort.Strings(counted)
	if len(counted) != 1 {
		got.Stage, got.Check = "", ""
	}
	if callErr == nil || got != want || after[want.Stage+"/"+want.Check]-before[want.Stage+"/"+want.Check] != 1 {
		return got, fmt.Errorf("step %d: want a refusal %s by the %s check %s; got %s, the join service counted %v",
			want.Step, want.Code, want.Stage, want.Check, reason(callErr), counted)
	}
	return got, nil
}

// policyFor pins measuredPCRs at their current values.
func policyFor(pcrs map[int][]byte, name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nname: %s\ntpm:\n  pcrs:\n", name)
	idx := append([]int(nil), measuredPCRs...)
	sort.Ints(idx)
	for _, i := range idx {
		fmt.Fprintf(&b, "    \"%d\": {value: %q}\n", i, hex.EncodeToString(pcrs[i]))
	}
	return b.String()
}

// validatorsFor builds the validators of a peer's policy, trusting its
// TPM's manufacturer CA.
func validatorsFor(doc string, peer *tpmtest.Swtpm) (attestation.Validators, error) {
	pol, err := policy.Parse([]byte(doc))
	if err != nil {
		return nil, err
	}
	return platform.Validators(pol, platform.Anchors{TPMEKRoots: peer.EKRoots})
}

func dial(addr string, creds *atls.Credentials) (*grpc.ClientConn, joinv1.JoinServiceClient, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, err
	}
	return conn, joinv1.NewJoinServiceClient(conn), nil
}

func join(ctx context.Context, addr string, creds *atls.Credentials, diskUUID string) (*joinv1.IssueJoinTicketResponse, error) {
	conn, client, err := dial(addr, creds)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The kubelet's key is made on the node and never leaves it.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + nodeName, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		return nil, err
	}
	return client.IssueJoinTicket(ctx, &joinv1.IssueJoinTicketRequest{
		DiskUuid:   diskUUID,
		KubeletCsr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		Role:       joinv1.Role_ROLE_WORKER,
		NodeName:   nodeName,
	})
}

func rejoin(ctx context.Context, addr string, creds *atls.Credentials, diskUUID string) (*joinv1.IssueRejoinTicketResponse, error) {
	conn, client, err := dial(addr, creds)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return client.IssueRejoinTicket(ctx, &joinv1.IssueRejoinTicketRequest{DiskUuid: diskUUID})
}

func reason(err error) string {
	if err == nil {
		return "(not refused!)"
	}
	s := status.Convert(err)
	return fmt.Sprintf("%s: %s", s.Code(), s.Message())
}

func certSubject(pemCert []byte) string {
	block, _ := pem.Decode(pemCert)
	if block == nil {
		return "(none)"
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "(unparsable)"
	}
	return c.Subject.CommonName
}

func short(b []byte) string { return hex.EncodeToString(b[:8]) + "…" }

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// auditSummary keeps the fields an operator reads first.
func auditSummary(line string) string {
	var parts []string
	for _, key := range []string{"kind", "decision", "node", "disk_uuid", "variant", "policy", "error"} {
		marker := `"` + key + `":"`
		i := strings.Index(line, marker)
		if i < 0 {
			continue
		}
		rest := line[i+len(marker):]
		j := strings.Index(rest, `"`)
		if j < 0 {
			continue
		}
		parts = append(parts, key+"="+rest[:j])
	}
	return strings.Join(parts, " ")
}

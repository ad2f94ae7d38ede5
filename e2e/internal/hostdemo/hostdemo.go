package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"google.golang.org/grpc"
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

func run(ctx context.Context, e *env) error {
	say := func(format string, a ...any) { fmt.Fprintf(e.out, format+"\n", a...) }
	step := func(n int, title string) { say("\n[%d] %s", n, title) }

	say("Cloister demo — a confidential node joins, locks its disk, reboots and recovers.")
	say("Real here: TPM 2.0 (swtpm), attested TLS, the join service, LUKS2 (libcryptsetup).")
	say("Faked here: the Kubernetes API (client-go fake); the disk is a file image (no device-mapper on this host).")

	step(1, "Two machines boot, each with its own vTPM and an EK certificate from its manufacturer CA")
	node := tpmtest.StartSwtpm(e)
	service := tpmtest.StartSwtpm(e)
	nodeIssuer, err := tpm.NewIssuer(node.RW, tpm.IssuerOptions{EKIntermediates: node.EKIntermediates})
	if err != nil {
		return fmt.Errorf("node issuer: %w", err)
	}
	serviceIssuer, err := tpm.NewIssuer(service.RW, tpm.IssuerOptions{EKIntermediates: service.EKIntermediates})
	if err != nil {
		return fmt.Errorf("join service issuer: %w", err)
	}
	say("    node TPM and join-service TPM ready; attestation keys created")

	step(2, "The operator pins the node image's boot measurements (PCRs 0-7) in the cluster policy")
	nodePolicy := policyFor(tpmtest.PCRs(e, node.RW), "demo-nodes")
	servicePolicy := policyFor(tpmtest.PCRs(e, service.RW), "demo-control-plane")
	say("    (swtpm boots no firmware, so these PCRs are at their reset value here; on a real node")
	say("    OVMF and the image fill them, and the policy comes from the image build)")
	say("%s", indent(nodePolicy))

	step(3, "The join service starts: it attests itself, verifies every node, derives keys")
	svc := jointest.Start(e, jointest.Options{
		Issuer: serviceIssuer,
		Build: func(p *policy.Policy) (attestation.Validators, error) {
			return platform.Validators(p, platform.Anchors{TPMEKRoots: node.EKRoots})
		},
		Policy: []byte(nodePolicy),
	})
	say("    listening on %s (mutual attested TLS, TLS 1.3)", svc.Addr)
	nodeCreds, err := nodeCredentials(nodeIssuer, servicePolicy, service)
	if err != nil {
		return err
	}

	step(4, "disk-mapper on the node: a fresh state disk is formatted LUKS2 with a one-time passphrase")
	diskPath := filepath.Join(e.TempDir(), "state-disk.img")
	if err := os.WriteFile(diskPath, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(diskPath, 32<<20); err != nil {
		return err
	}
	oneTime := make([]byte, cryptsetup.PassphraseSize)
	if _, err := rand.Read(oneTime); err != nil {
		return err
	}
	diskUUID, err := cryptsetup.Format(ctx, diskPath, oneTime, cryptsetup.FormatOptions{})
	if err != nil {
		return fmt.Errorf("formatting the state disk: %w", err)
	}
	say("    LUKS2 aes-xts-plain64, 512-bit key, 4096-byte sectors; disk UUID %s", diskUUID)

	step(5, "bootstrapper on the node: mutual attestation with the join service, then IssueJoinTicket")
	ticket, err := join(ctx, svc.Addr, nodeCreds, diskUUID)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	say("    ticket for %s: disk key (generation %d, %s), bootstrap token %s.REDACTED valid until %s,",
		nodeName, ticket.GetDiskKeyGeneration(), keys.Secret(ticket.GetDiskKey()), strings.SplitN(ticket.GetBootstrapToken(), ".", 2)[0],
		time.Unix(ticket.GetBootstrapTokenExpiry(), 0).UTC().Format(time.TimeOnly))
	say("    kubelet certificate for %s, CA pins %v", certSubject(ticket.GetKubeletCertificate()), ticket.GetDiscoveryTokenCaCertHashes())

	step(6, "The node re-keys its disk to the derived key and extends its cluster-ID latch (PCR 15)")
	dev, err := cryptsetup.Open(diskPath, cryptsetup.FormatOptions{})
	if err != nil {
		return err
	}
	defer dev.Close()
	if err := dev.Rekey(ctx, oneTime, ticket.GetDiskKey(), ticket.GetDiskKeyGeneration()); err != nil {
		return fmt.Errorf("re-keying: %w", err)
	}
	if _, err := dev.CheckKey(oneTime); err == nil {
		return fmt.Errorf("the one-time passphrase still opens the disk")
	}
	clusterID, err := keys.ClusterID(ticket.GetMeasurementSecret(), ticket.GetMeasurementSalt())
	if err != nil {
		return err
	}
	nodeLatch := latch.NewTPM(node.RW)
	if err := nodeLatch.Extend(ctx, clusterID); err != nil {
		return err
	}
	say("    the one-time passphrase no longer opens the disk; the derived key does")
	say("    PCR 15 = %s (cluster ID %s…)", short(mustValue(ctx, e, nodeLatch)), hex.EncodeToString(clusterID[:6]))

	step(7, "A second join in the same boot is refused: the latch is no longer at its reset value")
	_, err = join(ctx, svc.Addr, nodeCreds, diskUUID)
	say("    refused: %s", reason(err))
	if err == nil {
		return fmt.Errorf("a second join in the same boot was accepted")
	}

	step(8, "The node reboots with a modified boot loader (PCR 4 measures something else)")
	if err := node.Reboot(); err != nil {
		return err
	}
	if err := tpm2.PCRExtend(node.RW, tpmutil.Handle(4), tpm2.AlgSHA256, make([]byte, 32), ""); err != nil {
		return err
	}
	_, err = rejoin(ctx, svc.Addr, nodeCreds, diskUUID)
	say("    rejoin refused: %s", reason(err))
	if err == nil {
		return fmt.Errorf("a node with a modified boot chain got its disk key")
	}

	step(9, "The node reboots with the genuine image: disk-mapper asks again and gets its key back")
	if err := node.Reboot(); err != nil {
		return err
	}
	again, err := rejoin(ctx, svc.Addr, nodeCreds, diskUUID)
	if err != nil {
		return fmt.Errorf("rejoin after a genuine reboot: %w", err)
	}
	slot, err := dev.CheckKey(again.GetDiskKey())
	if err != nil {
		return fmt.Errorf("the rejoin key does not open the disk: %w", err)
	}
	salt := ticket.GetMeasurementSalt() // read from the unlocked disk on a real node
	id, err := keys.ClusterID(again.GetMeasurementSecret(), salt)
	if err != nil {
		return err
	}
	if err := nodeLatch.Extend(ctx, id); err != nil {
		return err
	}
	say("    the key opens keyslot %d of disk %s; PCR 15 latched to the cluster again", slot, diskUUID)

	step(10, "What the join service recorded")
	for _, line := range strings.Split(svc.Logs(), "\n") {
		if strings.Contains(line, `"audit":true`) {
			say("    %s", auditSummary(line))
		}
	}
	say("\nDone: attested join, disk re-keyed, double join refused, tampered boot refused, genuine reboot recovered.")
	return nil
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

func nodeCredentials(issuer attestation.Issuer, servicePolicy string, service *tpmtest.Swtpm) (*atls.Credentials, error) {
	pol, err := policy.Parse([]byte(servicePolicy))
	if err != nil {
		return nil, err
	}
	vs, err := platform.Validators(pol, platform.Anchors{TPMEKRoots: service.EKRoots})
	if err != nil {
		return nil, err
	}
	return atls.NewCredentials(atls.Config{Issuer: issuer, Verifier: vs, HandshakeTimeout: time.Minute})
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

func mustValue(ctx context.Context, e *env, l *latch.TPM) []byte {
	v, err := l.Value(ctx)
	if err != nil {
		e.Fatal(err)
	}
	return v
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

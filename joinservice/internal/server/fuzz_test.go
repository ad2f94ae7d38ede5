package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/joinservice/internal/kube"
	joinv1 "github.com/cloister-dev/cloister/proto/join/v1"
)

// FuzzCheckJoinRequest feeds arbitrary wire bytes through the request
// decoding and validation a handler runs before any key is derived: nothing
// may panic, and whatever is accepted must be well-formed.
func FuzzCheckJoinRequest(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:worker-1", Organization: []string{"system:nodes"}}}, key)
	if err != nil {
		f.Fatal(err)
	}
	good := &joinv1.IssueJoinTicketRequest{
		DiskUuid:   "0f4a2c1e-6b7d-4e8f-9a0b-1c2d3e4f5a6b",
		KubeletCsr: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		Role:       joinv1.Role_ROLE_WORKER,
		NodeName:   "worker-1",
	}
	seeds := []*joinv1.IssueJoinTicketRequest{good, {}, {DiskUuid: strings.ToUpper(good.DiskUuid), NodeName: "x"}, {Role: 99}}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	s := &Server{opts: Options{AllowControlPlaneJoins: true}}
	f.Fuzz(func(t *testing.T, wire []byte) {
		var req joinv1.IssueJoinTicketRequest
		if proto.Unmarshal(wire, &req) != nil {
			return
		}
		if s.checkJoinRequest(&req) != nil {
			return
		}
		if keys.CheckDiskUUID(req.GetDiskUuid()) != nil {
			t.Fatalf("accepted disk UUID %q", req.GetDiskUuid())
		}
		if r := req.GetRole(); r != joinv1.Role_ROLE_WORKER && r != joinv1.Role_ROLE_CONTROL_PLANE {
			t.Fatalf("accepted role %v", r)
		}
		csr, err := kube.CheckKubeletCSR(req.GetNodeName(), req.GetKubeletCsr())
		if err != nil {
			t.Fatalf("accepted a CSR that the CSR check refuses: %v", err)
		}
		if csr.Subject.CommonName != "system:node:"+req.GetNodeName() {
			t.Fatalf("accepted a CSR for %q as node %q", csr.Subject.CommonName, req.GetNodeName())
		}
	})
}

package snp_test

import (
	"context"
	"fmt"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/snp"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// A join service validates sev-snp evidence against AMD's real roots. VCEKs
// that a host did not ship come from a cache that a separate job fills; the
// offline cache keeps Validate off the network.
func ExampleNewValidator() {
	doc := []byte(`
version: 1
sev-snp:
  measurement:
    value: "4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f4f"
  minimumTCB: {bootloader: 3, tee: 0, snp: 8, microcode: 115}
  products: [Genoa]
`)
	pol, err := policy.Parse(doc)
	if err != nil {
		fmt.Println(err)
		return
	}
	cache, err := snp.NewCertCache("/var/lib/cloister/amd-certs", snp.CertCacheOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := snp.NewValidator(pol.SNP, snp.ValidatorOptions{Getter: cache})
	if err != nil {
		fmt.Println(err)
		return
	}
	var ev *attestationv1.Evidence // from the node, untrusted
	claims, err := v.Validate(context.Background(), ev, []byte("session binding"))
	fmt.Println(claims, err)
}

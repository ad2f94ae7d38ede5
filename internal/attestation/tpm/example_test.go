package tpm_test

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/cloister-dev/cloister/internal/attestation/policy"
	"github.com/cloister-dev/cloister/internal/attestation/tpm"
)

// Example shows endorsement mode end to end: the node issues evidence, the
// verifier challenges the AK through the certified EK, the node's TPM
// answers, and only then does Validate accept the evidence. (In Cloister the
// two sides talk through attested TLS; userData is derived from that
// session's exporter.)
func Example() {
	ctx := context.Background()
	eventLog, err := tpm.ReadEventLog(tpm.EventLogPath)
	if err != nil {
		fmt.Println(err)
		return
	}
	iss, err := tpm.OpenIssuer(tpm.DevicePath, tpm.IssuerOptions{EventLog: eventLog})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer iss.Close()

	manufacturerRoots := x509.NewCertPool() // the TPM vendors' EK roots
	pol := &policy.TPM{PCRs: map[int]policy.Value{ /* from the cluster policy */ }}
	v, err := tpm.NewValidator(pol, tpm.ValidatorOptions{EKRoots: manufacturerRoots})
	if err != nil {
		fmt.Println(err)
		return
	}

	userData := []byte("binding of this TLS session, 1..64 bytes")
	ev, err := iss.Issue(ctx, userData)
	if err != nil {
		fmt.Println(err)
		return
	}
	ch, err := v.Challenge(ctx, ev, userData)
	if err != nil {
		fmt.Println(err)
		return
	}
	if ch != nil {
		secret, err := iss.Respond(ctx, ch)
		if err != nil {
			fmt.Println(err)
			return
		}
		ev.TpmEndorsement.ActivatedSecret = secret
	}
	claims, err := v.Validate(ctx, ev, userData)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("latch pcr[15] = %x\n", claims.Measurements["pcr[15]"])
}

package atls_test

import (
	"context"
	"fmt"
	"log"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	"github.com/cloister-dev/cloister/internal/atls"
	"github.com/cloister-dev/cloister/internal/attestation"
	"github.com/cloister-dev/cloister/internal/attestation/insecuredev"
	"github.com/cloister-dev/cloister/internal/attestation/policy"
	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// A node's server attests itself and requires attesting clients; the
// operator's CLI only verifies the node. (insecure-dev stands in for a
// hardware variant here; main builds the real issuer and validators.)
func ExampleNewCredentials() {
	pol, err := policy.Parse([]byte("version: 1\ninsecure-dev: {iUnderstandThisProvesNothing: true}\n"))
	if err != nil {
		log.Fatal(err)
	}
	v, err := insecuredev.NewInsecureValidator(pol.InsecureDev)
	if err != nil {
		log.Fatal(err)
	}
	validators, err := attestation.NewValidators(v)
	if err != nil {
		log.Fatal(err)
	}

	serverCreds, err := atls.NewCredentials(atls.Config{Issuer: insecuredev.NewIssuer(), Verifier: validators})
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(serverCreds))
	defer srv.Stop()

	cliCreds, err := atls.NewCredentials(atls.Config{Verifier: validators})
	if err != nil {
		log.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///node.example:9000", grpc.WithTransportCredentials(cliCreds))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	var p peer.Peer
	if _, err := statusv1.NewStatusServiceClient(conn).Get(context.Background(), &statusv1.GetRequest{}, grpc.Peer(&p)); err != nil {
		log.Fatal(err)
	}
	if claims, ok := atls.ClaimsFromPeer(&p); ok {
		fmt.Println("node attested with", claims.Variant)
	}
}

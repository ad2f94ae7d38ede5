package kube_test

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/cloister-dev/cloister/joinservice/internal/kube"
)

func ExampleCluster_CreateBootstrapToken() {
	// A fixed clock and randomness make the output stable; main passes
	// neither.
	c, err := kube.New(fake.NewClientset(), kube.Options{
		Now:  func() time.Time { return time.Date(2026, 11, 27, 6, 0, 0, 0, time.UTC) },
		Rand: bytes.NewReader(bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 10)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	tok, err := c.CreateBootstrapToken(context.Background(), "worker-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("logged as:", tok)
	fmt.Println("expires:", tok.Expires)
	fmt.Println("for kubeadm:", len(tok.Reveal()), "characters")
	// Output:
	// logged as: 123456.REDACTED
	// expires: 2026-11-27 06:15:00 +0000 UTC
	// for kubeadm: 23 characters
}

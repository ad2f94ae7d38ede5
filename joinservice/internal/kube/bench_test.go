package kube

import (
	"context"
	"testing"
)

func BenchmarkCreateBootstrapToken(b *testing.B) {
	c, _ := newFakeCluster(b, Options{})
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.CreateBootstrapToken(ctx, "worker-1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckKubeletCSR(b *testing.B) {
	csr := validCSR(b, testNode)
	for b.Loop() {
		if _, err := CheckKubeletCSR(testNode, csr); err != nil {
			b.Fatal(err)
		}
	}
}

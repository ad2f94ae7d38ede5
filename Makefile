# Cloister: the only entry points. Every target installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO            ?= go
BIN           := $(CURDIR)/bin
# Builds are cached outside the checkout, keyed by their inputs, so that a
# fresh clone reuses them (hack/cachedir.sh: ~/.cache/cloister by default).
export CLOISTER_CACHE := $(shell ./hack/cachedir.sh)
PROTOC_GEN_GO      := v1.36.12
PROTOC_GEN_GO_GRPC := v1.6.2
TOOLS         := $(CLOISTER_CACHE)/tools/protoc-gen-go-$(PROTOC_GEN_GO)-grpc-$(PROTOC_GEN_GO_GRPC)
PKGS          := ./...
# e2e/ is its own module: vetted with the rest, its QEMU scenarios run only
# through `make e2e`.
VETPKGS       := ./... ./e2e/...
# Count-based (Nx), not a duration: a duration-based -fuzztime hits a Go 1.26
# coordinator race at its deadline ("context deadline exceeded", go.dev/issue/75804).
FUZZTIME      ?= 20000x
BENCHTIME     ?= 1s
# KUBEADM is a vanilla kubeadm built from the Go module proxy (hack/k8s);
# tests find it through CLOISTER_KUBEADM. K8S_DIR is named after the hash of
# what decides its bytes (hack/k8s/inputs.sh).
KUBE_VERSION  := v1.37.2
export K8S_DIR := $(CLOISTER_CACHE)/k8s/$(KUBE_VERSION)-$(shell ./hack/k8s/inputs.sh | cut -c1-16)
KUBEADM       := $(K8S_DIR)/kubeadm
export CLOISTER_KUBEADM := $(KUBEADM)

export PATH := $(TOOLS):$(PATH)

# grpc-health-probe, the standard gRPC health client, built from the module
# proxy and cached by version; the health tests of the plain status ports
# (joinservice/jointest, and the QEMU cluster scenario against the real
# join service) run it and find it through this variable.
HEALTH_PROBE_VERSION := v0.4.40
export CLOISTER_GRPC_HEALTH_PROBE := $(CLOISTER_CACHE)/tools/grpc-health-probe-$(HEALTH_PROBE_VERSION)/grpc-health-probe

.PHONY: build test deps vet unit fuzz kubeadm k8s proto proto-check lint bench bench-join demo demo-host e2e image clean clean-cache

build: deps
	$(GO) build -o $(BIN)/ ./...

## deps: install the Debian packages the build and tests need, when missing.
deps:
	@./hack/deps.sh

## test: what CI runs (.ci/run): vet, stale generated code, short fuzz runs,
## all host tests, then the QEMU end-to-end scenarios (last, so the output
## ends with go test's summary).
test: deps kubeadm vet proto-check fuzz unit e2e

vet:
	$(GO) vet $(VETPKGS)

## unit: every host test: the product module and, from the e2e module, the
## host walk-through (e2e/internal/hostdemo, what `make demo-host` prints).
HOSTPKGS      := ./e2e/internal/hostdemo/
unit: $(CLOISTER_GRPC_HEALTH_PROBE)
	$(GO) test -count=1 -timeout 20m $(PKGS) $(HOSTPKGS)

$(CLOISTER_GRPC_HEALTH_PROBE):
	GO=$(GO) ./hack/tools/grpc-health-probe.sh $(HEALTH_PROBE_VERSION) $@

## fuzz: a short run of every fuzz target (FUZZTIME each).
fuzz:
	@./hack/fuzz.sh $(FUZZTIME)

## kubeadm: build kubeadm $(KUBE_VERSION) from the module proxy (about 2.5 min
## cold), unless it is already cached.
kubeadm: $(KUBEADM)

$(KUBEADM):
	./hack/k8s/build.sh kubeadm $(KUBE_VERSION) $@

## k8s: vanilla Kubernetes $(KUBE_VERSION) for the node image, from the module
## proxy: kubeadm, kubelet, the control-plane images, etcd, the pod sandbox
## (about 8 min cold; each output is rebuilt only when its inputs change).
k8s: deps
	./hack/k8s/bundle.sh $(KUBE_VERSION) $(K8S_DIR)

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC)

## proto: regenerate the committed Go code from proto/.
proto: deps $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	cd proto && protoc -I . \
	  --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
	  $$(find . -name '*.proto' | sort)

## proto-check: fail when the committed generated code is stale.
proto-check: proto
	@git diff --exit-code --stat -- proto/ || { echo "proto: generated code is stale; run 'make proto' and commit" >&2; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- proto/); \
	  if [ -n "$$untracked" ]; then echo "proto: generated files not committed: $$untracked" >&2; exit 1; fi

lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench: every benchmark (validation per variant, aTLS handshake + first RPC,
## LUKS2 format/unlock), then the join service load test.
bench: deps
	$(GO) test -run '^$$' -bench . -skip JoinLoad -benchmem -benchtime $(BENCHTIME) $(PKGS)
	$(MAKE) bench-join

## bench-join: JOIN_CLIENTS concurrent nodes do JOINS complete attested joins
## against one join service on 127.0.0.1; prints joins/s, p50/p99, errors and
## the ratio to the bare TLS handshake + verification limit.
JOIN_CLIENTS ?= 200
JOINS        ?= 1000
bench-join: deps
	CLOISTER_LOAD_CLIENTS=$(JOIN_CLIENTS) $(GO) test -run '^$$' -bench JoinLoad -benchtime $(JOINS)x -v ./joinservice/internal/server/

## demo: the main job, in QEMU VMs under TCG (about 15 min; builds the node
## image first when it is missing): a control plane and a worker from the
## node image, `cloister init`, the worker's attested join, a power cut of the
## worker and its automatic recovery; progress, a summary, logs in .cache/demo.
demo: deps image
	@./hack/e2e-deps.sh
	$(GO) run ./e2e/cmd/demo

## demo-host: the node's path on this host in a minute, without VMs: a node
## with a real TPM (swtpm) attests to the real join service (fake Kubernetes
## API), re-keys its LUKS2 file image, is refused a double join and a
## tampered boot, and recovers after a genuine reboot. It checks itself (each
## refusal must come from its documented check: latch, pcr[4]) and runs as
## TestWalkThrough in make unit.
demo-host: deps
	$(GO) run ./e2e/cmd/demo-host

## image: the node image QEMU boots (.cache/image: uki.efi, root.img,
## reference values, manifest.txt): Debian bookworm by mkosi with this
## checkout's daemons and units and vanilla Kubernetes (make k8s). About 4 min
## cold. Built into the cache outside the checkout under the hash of its
## inputs, .cache/image links to it; skipped while an image with the same
## inputs exists (FORCE=1 rebuilds).
image: k8s
	./hack/image/build.sh

## e2e: the QEMU end-to-end tests (TCG, part of make test): the harness's own
## boots, a fresh node's encrypted state disk, the measured image and its
## tampered variants, then one Kubernetes cluster through init, outage, join,
## tamper, double join and reboot.
E2E_RUN     ?= .
E2E_TIMEOUT ?= 60m
e2e: deps image $(CLOISTER_GRPC_HEALTH_PROBE)
	@./hack/e2e-deps.sh
	CLOISTER_E2E=1 $(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) -run '$(E2E_RUN)' ./e2e/...

## clean: this checkout's outputs; the shared build cache stays (clean-cache).
clean:
	rm -rf $(BIN) .cache

clean-cache:
	rm -rf $(CLOISTER_CACHE)

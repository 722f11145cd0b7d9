# SmartProxy for OFTP2 — build, test and code generation.
# Run `make help` for the list of targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules

GO        ?= go
BIN       := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Pinned code-generation and diagnostics tools, installed into ./bin by version.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPCURL_VERSION            := v1.9.4

# How long each fuzz target runs in `make fuzz` (CI keeps it short).
FUZZTIME  ?= 10s
# Benchmark repetitions for `make bench`.
BENCHCOUNT ?= 5
BENCHTIME  ?= 1s

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build every binary into ./bin.
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

.PHONY: test
test: ## Vet, then run every test with the race detector.
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

# `make test-stress`: repetitions of the whole suite and its time limit.
STRESSCOUNT   ?= 3
STRESSTIMEOUT ?= 120m

.PHONY: test-stress
test-stress: ## Flake hunt (not in CI): the whole suite with -race -count=STRESSCOUNT beside two busy loops.
	$(GO) vet ./...
	@busy() { while :; do :; done; }; busy & b1=$$!; busy & b2=$$!; \
	  trap 'kill $$b1 $$b2 2>/dev/null || true' EXIT; trap 'exit 143' INT TERM; \
	  start=$$(date +%s); rc=0; \
	  $(GO) test -race -count=$(STRESSCOUNT) -timeout $(STRESSTIMEOUT) ./... || rc=$$?; \
	  echo "test-stress: -race -count=$(STRESSCOUNT) with two busy loops: $$(( $$(date +%s) - start ))s, exit status $$rc"; \
	  exit $$rc

.PHONY: test-attack
test-attack: ## Only the admission attack test (2,500 slow connections from 200 addresses; also part of make test).
	$(GO) test -race -count=1 -run TestAdmissionUnderAttack -v ./e2e/

.PHONY: test-short
test-short: ## Quick tests without the race detector.
	$(GO) test -short -count=1 ./...

.PHONY: lint
lint: tools ## gofmt, go vet, buf lint and buf format.
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/' || true)); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if [ -d proto ]; then buf lint && buf format -d --exit-code; fi

.PHONY: breaking
breaking: tools ## buf breaking against the previous release tag (before the first: the commit before HEAD).
	BUF=$(BIN)/buf ./scripts/breaking.sh

.PHONY: proto
proto: tools ## Regenerate Go code from proto/.
	buf generate

.PHONY: checkproto
checkproto: proto ## Fail when committed generated code differs from a fresh `make proto`.
	@git diff --exit-code -- gen/ || { echo "generated code is stale: run make proto and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen/)" || { echo "untracked generated files:"; git status --porcelain -- gen/; exit 1; }

.PHONY: fuzz
fuzz: ## Run every Fuzz target for FUZZTIME each (default 10s; a count such as 5000x works too).
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

.PHONY: bench
bench: ## Run the benchmarks (BENCHCOUNT, BENCHTIME); compare with benchstat.
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCHCOUNT) -benchtime $(BENCHTIME) ./...

.PHONY: bench-e2e
bench-e2e: build ## End-to-end transfers: direct TLS vs HAProxy vs SmartProxy; results into docs/benchmarks.md.
	./scripts/bench-e2e.sh

.PHONY: demo
demo: build ## Run the whole system on loopback with embedded defaults and deliver a file.
	./scripts/demo.sh

.PHONY: demo-ui
demo-ui: build ## Run the demo and keep the system up (web admin) until Ctrl-C.
	DEMO_UI=1 ./scripts/demo.sh

.PHONY: pki
pki: build ## Create a tunnel CA and server/client certificates in ./pki.
	$(BIN)/smartproxy-server pki init --dir $(CURDIR)/pki

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/grpcurl ## Install the pinned tools into ./bin.

$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(BIN)/grpcurl:
	GOBIN=$(BIN) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

.PHONY: clean
clean: ## Remove ./bin and test caches.
	rm -rf $(BIN)
	$(GO) clean -testcache

# Release and packages (docs/packaging.md). VERSION is x.y.z; LICENSE_KEYS is a file of
# production license public keys (keyid:base64 a line, as `smartproxy-license keygen` prints).
VERSION      ?=
LICENSE_KEYS ?=
DIST         ?= $(CURDIR)/dist
NFPM_VERSION := v2.48.0

.PHONY: release
release: ## make release VERSION=x.y.z LICENSE_KEYS=FILE: stamped binaries without the development key into dist/VERSION/.
	GO=$(GO) VERSION=$(VERSION) LICENSE_KEYS=$(LICENSE_KEYS) DIST=$(DIST) ./scripts/release.sh

.PHONY: package
package: release $(BIN)/nfpm ## make package VERSION=x.y.z LICENSE_KEYS=FILE: the three .deb packages into dist/VERSION/.
	NFPM=$(BIN)/nfpm VERSION=$(VERSION) DIST=$(DIST) ./scripts/package.sh

.PHONY: install-test
install-test: ## Build the packages with a throwaway key and install them into a throwaway root.
	GO=$(GO) ./scripts/install-test.sh

# nfpm is installed by version like the other tools, not as a tool dependency of go.mod: its
# large dependency graph stays out of the version selection of the module's own dependencies.
$(BIN)/nfpm:
	GOBIN=$(BIN) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

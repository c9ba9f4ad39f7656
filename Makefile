# reconf: a replicated reconfiguration controller.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS        := ./...

.PHONY: all build test run fmt lint fuzz bench clean jepsen image compose-up compose-down

all: build

# bin/reconfd (the node) and bin/reconfctl (the operator CLI).
build:
	$(GO) build $(PKGS)
	$(GO) build -o bin/reconfd ./cmd/node
	$(GO) build -o bin/reconfctl ./cmd/ctl

# A local three-node cluster in the foreground; data in ./data/n1..n3.
run: build
	./scripts/run-local.sh

# The suite CI runs. Long fuzzing and benchmarks are separate targets.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 15m $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run $(STATICCHECK) $(PKGS)

# FUZZTIME per target, e.g. make fuzz FUZZTIME=2m
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./fsm/ -run '^$$' -fuzz '^FuzzDecodeEntry$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./fsm/ -run '^$$' -fuzz '^FuzzRestore$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./snapshot/ -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./transport/ -run '^$$' -fuzz '^FuzzRequestDecoders$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./transport/ -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./transport/ -run '^$$' -fuzz '^FuzzFlatDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./transport/ -run '^$$' -fuzz '^FuzzParseTokens$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./cluster/ -run '^$$' -fuzz '^FuzzParsePeers$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s
	$(GO) test ./transport/ -run '^$$' -fuzz '^FuzzClusterHello$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 3s

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./fsm/ ./snapshot/

clean:
	rm -rf bin

# The container image (deploy/Dockerfile): static binaries built here, then
# copied into a FROM scratch image; nothing is pulled. IMAGE=name:tag.
IMAGE ?= reconf/reconfd:latest
image:
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags='-s -w' -o bin/linux/reconfd ./cmd/node
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags='-s -w' -o bin/linux/reconfctl ./cmd/ctl
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# Three nodes on the local Docker engine (deploy/docker-compose.yml).
COMPOSE ?= docker-compose
compose-up: image
	RECONF_IMAGE=$(IMAGE) $(COMPOSE) -f deploy/docker-compose.yml up -d

compose-down:
	RECONF_IMAGE=$(IMAGE) $(COMPOSE) -f deploy/docker-compose.yml down -v

# Partition testing (see README "Partition testing (jepsen)"): a 5-node
# cluster of real reconfd processes in network namespaces, under faults.
# Needs root. make jepsen TIME=300 [NODES=5] [UNSAFE=1]; results in
# jepsen/results/<timestamp>/; exits non-zero if any checker fails.
TIME   ?= 60
NODES  ?= 5
UNSAFE ?=
jepsen:
	$(GO) build -o bin/reconfd ./cmd/node
	$(GO) build -o bin/jepsen ./jepsen/cmd/jepsen
	./bin/jepsen -time $(TIME) -nodes $(NODES) -unsafe "$(UNSAFE)" -bin bin/reconfd -results jepsen/results

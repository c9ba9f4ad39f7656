# reconf: a replicated reconfiguration controller.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS        := ./...

.PHONY: all build test run fmt lint fuzz bench clean jepsen

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

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./fsm/ ./snapshot/

clean:
	rm -rf bin

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

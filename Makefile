# reconf: a replicated reconfiguration controller.
GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
PKGS        := ./...

.PHONY: all build test fmt lint fuzz bench clean

all: build

build:
	$(GO) build $(PKGS)

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
	$(GO) test ./fsm/ -run '^$$' -fuzz '^FuzzDecodeEntry$$' -fuzztime $(FUZZTIME)
	$(GO) test ./fsm/ -run '^$$' -fuzz '^FuzzRestore$$' -fuzztime $(FUZZTIME)
	$(GO) test ./snapshot/ -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./fsm/ ./snapshot/

clean:
	rm -rf bin

# nearchat: see README.md. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin
BIN := bin
CMDS := $(notdir $(wildcard cmd/*))
FUZZTIME ?= 60s
BENCHFLAGS ?=

.PHONY: help build test race fuzz bench lint clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

build: ## build every program into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

test: build ## vet, then every test with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

race: ## the tests again under -race, three times, to shake out flakes
	$(GO) test -race -count=3 -timeout 30m ./...

fuzz: ## fuzz the frame parser for FUZZTIME (default 60s)
	$(GO) test -run '^$$' -fuzz '^FuzzParseFrame$$' -fuzztime $(FUZZTIME) ./pkg/wire

bench: ## fan-out benchmarks (gnet server and goroutine baseline) with a ratio table
	$(GO) test -run '^$$' -bench . -benchmem $(BENCHFLAGS) ./pkg/... ./chatserver/...

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## remove built programs
	rm -rf $(BIN)

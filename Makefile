# nearchat: see README.md. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin
BIN := bin
CMDS := $(notdir $(wildcard cmd/*))
FUZZTIME ?= 60s
BENCHFLAGS ?=
COMPAREFLAGS ?=

# Debian packages the tests use: tmux drives the terminal client in its
# integration test; chromium (headless) drives the dashboard in its browser
# test; etcd (Debian's etcd-server) backs the etcd store's tests. An entry is
# the command, or command:package when the two differ. The Mininet scenario
# installs its own.
APT_TEST_DEPS := tmux chromium etcd:etcd-server

MININET_FLAGS ?=
# make chaos: how many seeds every scenario runs with, and the first seed
# (0: taken from the clock; the summary prints it, so a failure can be rerun).
CHAOS_RUNS ?= 3
CHAOS_SEED ?= 0

# mininet is also a directory, so every target is phony.
.PHONY: help build deps test race fuzz bench lint demo cluster-demo chaos certs mininet mininet-test soak clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

build: ## build every program into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

deps: ## install the Debian packages the tests need (as root; otherwise say what is missing)
	@missing=""; for p in $(APT_TEST_DEPS); do command -v $${p%%:*} >/dev/null || missing="$$missing $${p#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing:$$missing"; apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $$missing; \
	else echo "not root: cannot install$$missing; the tests that need them will skip and say so"; fi

test: build deps ## vet, then every test with the race detector (and the tests of nearchat's change to gnet and of bench/nats, which make bench builds)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	cd third_party/gnet && $(GO) test -race -count=1 ./pkg/netpoll ./pkg/io
	cd bench/nats && $(GO) vet ./... && $(GO) test -count=1 ./...
	./mininet/mininet-test.sh $(MININET_FLAGS)

race: ## the tests again under -race, three times, to shake out flakes
	$(GO) test -race -count=3 -timeout 30m ./...

fuzz: ## fuzz the frame parser for FUZZTIME (default 60s)
	$(GO) test -run '^$$' -fuzz '^FuzzParseFrame$$' -fuzztime $(FUZZTIME) ./pkg/wire

bench: ## nearchat vs nats-server (and the goroutine baseline), pinned apart, plain and TLS: one table (~5 min; COMPAREFLAGS=-full for 10 s cells)
	cd bench/nats && $(GO) build -o ../../$(BIN)/compare .
	$(BIN)/compare $(COMPAREFLAGS)
	$(GO) test -run '^$$' -bench . -benchmem $(BENCHFLAGS) ./pkg/wire ./pkg/selection ./chatserver ./central

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

demo: build ## the paper's scenario on loopback: Central, four chat servers, two bots
	$(BIN)/demo -bin $(BIN)

cluster-demo: build deps ## 3 etcd members, 3 Central replicas, 4 chat servers, 2 bots: SIGKILL the leader Central, then an etcd member
	$(BIN)/demo -bin $(BIN) -replicas

chaos: build deps ## fault injection on real processes, a proxy on every link: every scenario with CHAOS_RUNS seeds from CHAOS_SEED; fails on any violation
	$(BIN)/chaos -bin $(BIN) -runs $(CHAOS_RUNS) -seed $(CHAOS_SEED) -json chaos.json

certs: build ## a development CA and certificates in certs/ (for -tls flags and the demo)
	$(BIN)/certs -dir certs

mininet: build ## the paper's network in Mininet with its CLI (root; MININET_FLAGS='--delay-mode relay')
	/usr/bin/python3 -I mininet/chat_network.py $(MININET_FLAGS)

mininet-test: build ## the paper's scenario as a headless Mininet test (root on Linux; installs Mininet; skips otherwise)
	./mininet/mininet-test.sh $(MININET_FLAGS)

soak: build ## 200 rooms x 3 for 2 min, a chat server SIGKILLed every 10 s, Central restarted once; fails on any loss
	$(BIN)/chatload -bin $(BIN) -rooms 200 -members 3 -rate 1 -duration 2m -servers 4 -probe-every 5s -chaos kill=10s,central=@64s -max-outage 1s -json soak.json

clean: ## remove built programs
	rm -rf $(BIN)

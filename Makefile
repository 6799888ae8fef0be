# mpath-sg: build, unit tests, and the real-kernel lab (tests/vm).
#   make test   install what is missing (as root), build, lint, cargo test, the VM suite
#   make demo   boot the lab and show a transcript of the daemon at work
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build clients lint unit lab test demo bench clean

all: build

deps:
	@tests/vm/install-deps

build: clients
	$(CARGO) build --release --locked --all-targets

# Test clients for the lab: the sg ABI probers, native and 32-bit (compat ioctls).
CLIENTS := target/clients/sgio_probe target/clients/sgio_probe32 target/clients/sgio_bench \
	target/clients/sg_async_probe target/clients/sg_async_probe32
clients: $(CLIENTS)
target/clients/sgio_probe: tests/vm/clients/sgio_probe.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Werror -o $@ $<
target/clients/sgio_probe32: tests/vm/clients/sgio_probe.c
	@mkdir -p $(@D)
	$(CC) -m32 -O2 -Wall -Werror -o $@ $<
target/clients/sg_async_probe: tests/vm/clients/sg_async_probe.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Werror -o $@ $<
target/clients/sg_async_probe32: tests/vm/clients/sg_async_probe.c
	@mkdir -p $(@D)
	$(CC) -m32 -O2 -Wall -Werror -o $@ $<
target/clients/sgio_bench: tests/vm/clients/sgio_bench.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Werror -pthread -o $@ $<

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

unit:
	$(CARGO) test --release --locked

# The VM suite; SCENARIOS="name ..." runs a subset.
lab: build
	tests/vm/run $(SCENARIOS)

test: deps
	$(MAKE) build
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) lab

demo: deps build
	@tests/vm/run --script tests/vm/demo.sh

# Benchmarks in the lab (software emulation: only ratios from one run mean anything);
# writes docs/benchmarks.md.
bench: deps build
	@tests/vm/run --script tests/vm/bench.sh
	cp tests/vm/out/benchmarks.md docs/benchmarks.md
	@cat docs/benchmarks.md

clean:
	$(CARGO) clean
	rm -rf tests/vm/out

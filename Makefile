# mpath-sg: build, unit tests, and the real-kernel lab (tests/vm).
#   make test   install what is missing (as root), build, lint, cargo test, the VM suite
#               (on 6.1, and a short part of it on 6.12)
#   make lab-6.12   the whole VM suite on Debian's 6.12 kernel
#   make test-guest a VM on the node, long, with throughput against /dev/sgN, both kernels
#   make demo   boot the lab and show a transcript of the daemon at work
#   make fuzz   the randomized tests at FUZZ_CASES cases each (make test runs 256)
#   make soak   the lab's soak at SOAK_SECONDS (make test runs a short one)
#   make install / make uninstall   [DESTDIR=...] [PREFIX=/usr/local]
SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
DOCDIR ?= $(PREFIX)/share/doc/mpath-sg
# systemd reads units from /usr/local/lib/systemd/system too; udev reads rules only from
# /etc, /run and /usr/lib: a /usr/local install puts its rule in /etc/udev/rules.d.
UNITDIR ?= $(PREFIX)/lib/systemd/system
UDEVRULESDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/udev/rules.d,/etc/udev/rules.d)
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build clients lint unit fuzz lab lab-6.12 test-guest soak test demo bench clean install uninstall install-check

all: build

deps:
	@tests/vm/install-deps

build: clients
	$(CARGO) build --release --locked --all-targets

# Test clients for the lab: the sg ABI probers, native and 32-bit (compat ioctls), the
# benchmark, the hoarder (data budget), the isolation checker (per-thread buffers), the
# credentials checker, seccomp_exec (the unit's system call filter, lib/unit-sandbox), and
# the soak's writer (stamped blocks, proven on every read), and the guest's workload.
CLIENTS := target/clients/sgio_probe target/clients/sgio_probe32 target/clients/sgio_bench \
	target/clients/sg_async_probe target/clients/sg_async_probe32 target/clients/hoard \
	target/clients/sg_isolation target/clients/sgio_pingpong \
	target/clients/sg_creds target/clients/seccomp_exec target/clients/soak \
	target/clients/guest_io
clients: $(CLIENTS)
# The guest's workload (80-guest): static, its initramfs has no libc.
target/clients/guest_io: tests/vm/clients/guest_io.c
	@mkdir -p $(@D)
	$(CC) -static -O2 -Wall -Werror -o $@ $<
# Each client from its own source; NAME32 is NAME built for 32-bit callers (compat path).
target/clients/%32: tests/vm/clients/%.c
	@mkdir -p $(@D)
	$(CC) -m32 -O2 -Wall -Werror -o $@ $<
target/clients/%: tests/vm/clients/%.c
	@mkdir -p $(@D)
	$(CC) -O2 -Wall -Werror -pthread -o $@ $<

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings -D clippy::undocumented_unsafe_blocks

unit:
	$(CARGO) test --release --locked

# The randomized tests (every test module named `fuzz`: the CUSE request decoder, the
# sg_io_hdr codec and both SG_IO front ends against one simulated caller, the request
# list against a model, the DM table/status/message parsers with an allocation bound, the
# /proc parsers, the classification). `make unit` runs them at proptest's 256 cases;
# a failing case is saved under proptest-regressions/ and replayed first next time.
FUZZ_CASES ?= 1000000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --locked fuzz

# The VM suite on Debian 12's 6.1 kernel; SCENARIOS="name ..." runs a subset, LAB_SKIP
# leaves names out of the whole suite.
lab: build
	LAB_SKIP="$(LAB_SKIP)" tests/vm/run $(SCENARIOS)

# The VM suite on the 6.12 kernel (logs in tests/vm/out-6.12): all of it, or SCENARIOS.
# make test runs LAB_612_SHORT there: failover, the sg ABI compared with /dev/sgN on that
# kernel (synchronous and asynchronous), restarts (6.12 resends what a killed daemon had
# read), and a guest on the node through path failures and restarts (the nested guest,
# ~3 min, runs on 6.12 only in make test; make test-guest runs it on both).
LAB_612_SHORT := 30-failover 40-sg-abi-differential 41-sg-async 45-restart 80-guest
lab-6.12: build
	LAB_SKIP="$(LAB_SKIP)" LAB_KERNEL=6.12 LAB_OUTDIR=$(CURDIR)/tests/vm/out-6.12 tests/vm/run $(SCENARIOS)

# The guest on the node for GUEST_SECONDS of I/O under path faults, then without faults
# through the node and through /dev/sgN for the same time (throughput of both), on 6.1
# and on 6.12. Prints each kernel's figures (tests/vm/out*/guest-throughput.txt) and
# writes them to docs/benchmarks.md ("A guest on the node").
GUEST_SECONDS ?= 120
test-guest: deps build
	for k in 6.1 6.12; do \
		LAB_KERNEL=$$k LAB_OUTDIR=$(CURDIR)/tests/vm/out-guest-$$k LAB_GUEST_SECONDS=$(GUEST_SECONDS) \
		LAB_GUEST_REFERENCE=1 LAB_SCENARIO_TIMEOUT=$$((3 * ($(GUEST_SECONDS) + 400))) \
		LAB_TIMEOUT=$$((3 * ($(GUEST_SECONDS) + 400) + 600)) tests/vm/run 80-guest || exit 1; \
		echo "kernel $$k:"; cat tests/vm/out-guest-$$k/guest-throughput.txt; \
	done
	tests/vm/guest-bench-section docs/benchmarks.md \
		6.1=tests/vm/out-guest-6.1/guest-throughput.txt 6.12=tests/vm/out-guest-6.12/guest-throughput.txt

# The soak (tests/vm/scenarios/70-soak.sh) for SOAK_SECONDS; make test runs it for 60 s.
# Prints tests/vm/out/reliability-soak.md (figures for docs/reliability.md).
SOAK_SECONDS ?= 1800
soak: deps build
	LAB_SOAK_SECONDS=$(SOAK_SECONDS) LAB_SCENARIO_TIMEOUT=$$(($(SOAK_SECONDS) + 600)) \
		LAB_TIMEOUT=$$(($(SOAK_SECONDS) + 1200)) tests/vm/run 70-soak
	@cat tests/vm/out/reliability-soak.md

test: deps
	$(MAKE) build
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) install-check
	$(MAKE) lab LAB_SKIP=80-guest
	$(MAKE) lab-6.12 SCENARIOS="$(LAB_612_SHORT)"

# Installs what `make build` built (run that first; installing never builds, so that
# `sudo make install` needs no toolchain for root). The unit's ExecStart follows SBINDIR.
BIN := target/release/mpath-sgd
INSTALLED := $(SBINDIR)/mpath-sgd $(UNITDIR)/mpath-sgd.service $(UDEVRULESDIR)/90-mpath-sg.rules \
	$(DOCDIR)/README.md $(addprefix $(DOCDIR)/,$(notdir $(wildcard docs/*.md)))
install:
	@test -x $(BIN) || { echo "make install: $(BIN) is not built; run 'make build' first" >&2; exit 1; }
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/mpath-sgd
	install -d -m 0755 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(UDEVRULESDIR) $(DESTDIR)$(DOCDIR)
	sed -e 's|/usr/local/sbin/mpath-sgd|$(SBINDIR)/mpath-sgd|' \
		-e 's|/usr/local/share/doc/mpath-sg|$(DOCDIR)|' \
		systemd/mpath-sgd.service >$(DESTDIR)$(UNITDIR)/mpath-sgd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/mpath-sgd.service
	install -m 0644 systemd/90-mpath-sg.rules $(DESTDIR)$(UDEVRULESDIR)/90-mpath-sg.rules
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	@echo "installed; as root: systemctl daemon-reload && udevadm control --reload && systemctl enable --now mpath-sgd"

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

# install/uninstall into a scratch DESTDIR, for both usual prefixes: every file where it
# belongs, the unit valid for systemd, nothing left behind.
install-check:
	@tests/install-check

demo: deps build
	@tests/vm/run --script tests/vm/demo.sh

# Benchmarks in the lab (software emulation: only ratios from one run mean anything);
# writes docs/benchmarks.md, keeping its guest section (make test-guest writes that).
bench: deps build
	@tests/vm/run --script tests/vm/bench.sh
	sed -n '/^## A guest on the node/,$$p' docs/benchmarks.md >tests/vm/out/guest-section.md
	cp tests/vm/out/benchmarks.md docs/benchmarks.md
	if [ -s tests/vm/out/guest-section.md ]; then printf '\n' >>docs/benchmarks.md; cat tests/vm/out/guest-section.md >>docs/benchmarks.md; fi
	@cat docs/benchmarks.md

clean:
	$(CARGO) clean
	rm -rf tests/vm/out

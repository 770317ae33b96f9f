# wgkeeper — see README.md. Every target that needs system packages depends on `deps`,
# which installs only what is missing (Debian 12).
SWIFT        ?= swift
SWIFT_FLAGS  ?=
PREFIX       ?= /usr/local
DESTDIR      ?=

# Build and test: libraries and headers; iproute2, wireguard-tools and bpftool as independent
# readers; ethtool (checksum offload off in a datapath test); ping for the scenario; python3 jsonschema/yaml for the schema test (Debian's python3);
# nft to make the FORWARD chains the status safety section must notice.
DEBIAN_PACKAGES = pkg-config libmnl-dev libbpf-dev libsystemd-dev libyaml-dev iproute2 bpftool ethtool wireguard-tools iputils-ping python3-jsonschema python3-yaml nftables

# What the release build, the package and the system tier install on top (their targets name them).
RELEASE_PACKAGES = binutils
DEB_PACKAGES     = dpkg-dev lintian
SYSTEM_PACKAGES  = mmdebstrap qemu-system-x86 linux-image-amd64 busybox-static

.PHONY: all demo deps test-deps build test test-unit test-kernel test-vm test-system test-fuzz fuzz bench soak clean

all: build

deps:
	@command -v $(SWIFT) >/dev/null || { echo "error: '$(SWIFT)' not found: install Swift 6 (expected in /opt/swift/usr/bin)" >&2; exit 1; }
	@scripts/apt-ensure $(DEBIAN_PACKAGES)

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

# The gateway scenario (README, "The problem it solves"), narrated, in network namespaces (in
# the VM when this kernel has no WireGuard). Leaves nothing behind.
demo: build
	@[ "$$(id -u)" = 0 ] || { echo "error: the demo needs root (network namespaces)" >&2; exit 1; }
	scripts/demo

# Every tier, then one closing line "N passed, M failed". Each tier runs even when an
# earlier one failed, so one run shows everything; the closing line decides the exit status.
# The VM tier runs beside the tiers that only need CPU (scripts/test-all says which and why).
test: deps
	@MAKE="$(MAKE)" scripts/test-all

# Everything any tier installs, one step after another (scripts/test-all runs tiers side by side).
test-deps: deps
	@scripts/apt-ensure $(RELEASE_PACKAGES) $(DEB_PACKAGES) $(SYSTEM_PACKAGES)
	Tests/Scenarios/vm/run.sh --install-only

# Tier 1: unit, no privileges.
test-unit: deps
	scripts/run-tier unit $(SWIFT_FLAGS) --skip KernelTests --skip VMTests

# Tier 2: root, throwaway network namespaces on the host kernel.
# The model-based test in `make test` replays one fixed seed, so a red CI means a regression,
# not a new random sequence; `make soak` draws fresh seeds (MODEL_SEED= to pick one here).
MODEL_SEED ?= 799236139
# 120 steps (5 minutes at 200 under a loaded CI); `make soak` runs 2 000.
MODEL_STEPS ?= 120

test-kernel: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: the kernel tier needs root (network namespaces, netlink writes)" >&2; exit 1; }
	$(SWIFT) build $(SWIFT_FLAGS)
	scripts/netns-sweep
	WGK_MODEL_SEED=$(MODEL_SEED) WGK_MODEL_STEPS=$(MODEL_STEPS) scripts/run-tier kernel $(SWIFT_FLAGS) --filter KernelTests; status=$$?; scripts/netns-sweep; exit $$status

# Tier 3: WireGuard and the end-to-end scenario, in a VM on Debian's 6.1 kernel.
# Its model-based test replays a fixed seed too (749130447 found the prune_peers: false leak).
VM_MODEL_SEED ?= 749130447
test-vm: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: the VM tier needs root" >&2; exit 1; }
	WGK_MODEL_SEED=$(VM_MODEL_SEED) VM_PASS_ENV="$$VM_PASS_ENV WGK_MODEL_SEED" scripts/run-tier vm --exec scripts/test-vm

# Tier "fuzz": each libFuzzer target (Fuzz/) for FUZZ_TEST_SECONDS from its seeds, one test per
# target; a crash fails it and prints the reproducer (under .build/fuzz). No privileges.
FUZZ_TEST_SECONDS ?= 15
test-fuzz: deps
	SWIFT=$(SWIFT) scripts/run-tier fuzz --exec scripts/fuzz --seconds $(FUZZ_TEST_SECONDS)

# The same targets for longer: FUZZ_SECONDS each (FUZZ_TARGETS to choose).
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?=
fuzz: deps
	SWIFT=$(SWIFT) scripts/fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Issue 9's figures into BENCHMARKS.md (root; namespaces, BIRD 2, the VM). Never part of `test`.
bench: deps
	SWIFT=$(SWIFT) scripts/bench

# The model-based test (DaemonKernelTests.ModelTests) over a long sequence: 2 000 configurations
# from one seed (WGK_MODEL_SEED=N to replay; printed at the start and on failure). Root; never part of `test`.
SOAK_STEPS ?= 2000
soak: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: the soak needs root (network namespaces)" >&2; exit 1; }
	$(SWIFT) build $(SWIFT_FLAGS)
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	WGK_MODEL_STEPS=$(SOAK_STEPS) $(SWIFT) test --skip-build $(SWIFT_FLAGS) --filter DaemonKernelTests.ModelTests

clean:
	rm -rf .build .build-fuzz

# --- Deployment (README "Installation") ----------------------------------------------------
# `make install [DESTDIR=...] [PREFIX=/usr/local]`: binary, systemd units (the daemon; the
# metrics timer and its service, not enabled), tmpfiles entry,
# iproute2 protocol name, example configuration, manual pages, shell completions. Files in /etc
# that exist are never replaced. WGKEEPER_BIN installs a binary already built instead of
# building the release one.
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR    ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR         ?= $(PREFIX)/share/doc/wgkeeper
MANDIR         ?= $(PREFIX)/share/man
BASHCOMPDIR    ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR     ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR    ?= $(PREFIX)/share/fish/vendor_completions.d
WGKEEPER_BIN   ?=

# The installed binary: the Swift runtime linked in (it runs without a toolchain; its only
# shared libraries are Debian's), stripped as dh_strip does.
RELEASE_FLAGS  ?= -c release --static-swift-stdlib
RELEASE_BIN     = .build/dist/wgkeeper
# Manual pages and completions generated from the binary (scripts/gen-docs).
DOCS_OUT        = .build/dist/docs

.PHONY: install uninstall release test-deploy deb

release: deps
	@scripts/apt-ensure $(RELEASE_PACKAGES)
	$(SWIFT) build $(RELEASE_FLAGS) --product wgkeeper $(SWIFT_FLAGS)
	@mkdir -p .build/dist
	strip --remove-section=.comment --remove-section=.note --strip-unneeded \
		-o $(RELEASE_BIN) "$$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path $(SWIFT_FLAGS))/wgkeeper"
	@ls -l $(RELEASE_BIN); ldd $(RELEASE_BIN)
	@test $$(stat -c %s $(RELEASE_BIN)) -le 20000000 || { echo "error: $(RELEASE_BIN) is over 20 MB:" \
		"does a shipping module import Foundation (and its ICU data) instead of FoundationEssentials?" >&2; exit 1; }

install: $(if $(WGKEEPER_BIN),,release)
	scripts/gen-docs "$(or $(WGKEEPER_BIN),$(RELEASE_BIN))" $(DOCS_OUT)
	install -D -m 0755 "$(or $(WGKEEPER_BIN),$(RELEASE_BIN))" "$(DESTDIR)$(PREFIX)/bin/wgkeeper"
	install -d -m 0755 "$(DESTDIR)$(SYSTEMDUNITDIR)" "$(DESTDIR)$(TMPFILESDIR)" "$(DESTDIR)$(DOCDIR)/examples/conf.d"
	for unit in wgkeeper.service wgkeeper-metrics.service wgkeeper-metrics.timer; do \
		sed 's|/usr/local/|$(PREFIX)/|g' deploy/$$unit > "$(DESTDIR)$(SYSTEMDUNITDIR)/$$unit" && chmod 0644 "$(DESTDIR)$(SYSTEMDUNITDIR)/$$unit" || exit 1; \
	done
	install -m 0644 deploy/tmpfiles.d/wgkeeper.conf "$(DESTDIR)$(TMPFILESDIR)/wgkeeper.conf"
	install -m 0644 README.md deploy/wgkeeper.schema.json deploy/wgkeeper.yaml "$(DESTDIR)$(DOCDIR)/"
	install -m 0644 deploy/examples/conf.d/*.yaml "$(DESTDIR)$(DOCDIR)/examples/conf.d/"
	install -D -m 0644 $(DOCS_OUT)/man/wgkeeper.8 "$(DESTDIR)$(MANDIR)/man8/wgkeeper.8"
	install -D -m 0644 $(DOCS_OUT)/man/wgkeeper.yaml.5 "$(DESTDIR)$(MANDIR)/man5/wgkeeper.yaml.5"
	install -D -m 0644 $(DOCS_OUT)/completions/wgkeeper.bash "$(DESTDIR)$(BASHCOMPDIR)/wgkeeper"
	install -D -m 0644 $(DOCS_OUT)/completions/_wgkeeper "$(DESTDIR)$(ZSHCOMPDIR)/_wgkeeper"
	install -D -m 0644 $(DOCS_OUT)/completions/wgkeeper.fish "$(DESTDIR)$(FISHCOMPDIR)/wgkeeper.fish"
	install -d -m 0755 "$(DESTDIR)$(SYSCONFDIR)/iproute2/rt_protos.d"
	[ -e "$(DESTDIR)$(SYSCONFDIR)/iproute2/rt_protos.d/wgkeeper.conf" ] || install -m 0644 deploy/rt_protos.d/wgkeeper.conf "$(DESTDIR)$(SYSCONFDIR)/iproute2/rt_protos.d/wgkeeper.conf"
	install -d -m 0750 "$(DESTDIR)$(SYSCONFDIR)/wgkeeper" "$(DESTDIR)$(SYSCONFDIR)/wgkeeper/conf.d"
	install -m 0640 deploy/wgkeeper.yaml "$(DESTDIR)$(SYSCONFDIR)/wgkeeper/wgkeeper.yaml.example"
	install -m 0644 deploy/wgkeeper.schema.json "$(DESTDIR)$(SYSCONFDIR)/wgkeeper/wgkeeper.schema.json"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemd-tmpfiles --create "$(TMPFILESDIR)/wgkeeper.conf"; systemctl daemon-reload; fi
	@[ -e "$(DESTDIR)$(SYSCONFDIR)/wgkeeper/wgkeeper.yaml" ] || echo "next: write $(SYSCONFDIR)/wgkeeper/wgkeeper.yaml (start from wgkeeper.yaml.example), then: systemctl enable --now wgkeeper"

# Leaves /etc/wgkeeper (configuration, keys) and /etc/iproute2/rt_protos.d/wgkeeper.conf.
uninstall:
	rm -f "$(DESTDIR)$(PREFIX)/bin/wgkeeper" "$(DESTDIR)$(SYSTEMDUNITDIR)/wgkeeper.service" "$(DESTDIR)$(TMPFILESDIR)/wgkeeper.conf"
	rm -f "$(DESTDIR)$(SYSTEMDUNITDIR)/wgkeeper-metrics.service" "$(DESTDIR)$(SYSTEMDUNITDIR)/wgkeeper-metrics.timer"
	rm -f "$(DESTDIR)$(MANDIR)/man8/wgkeeper.8" "$(DESTDIR)$(MANDIR)/man5/wgkeeper.yaml.5" "$(DESTDIR)$(BASHCOMPDIR)/wgkeeper" \
		"$(DESTDIR)$(ZSHCOMPDIR)/_wgkeeper" "$(DESTDIR)$(FISHCOMPDIR)/wgkeeper.fish"
	rm -rf "$(DESTDIR)$(DOCDIR)"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# Tier "deploy": the unit under systemd-analyze (verify, security <= 3.0), the ExecStart line
# against the binary, make install into a scratch DESTDIR, the installed example config.
test-deploy: deps
	scripts/run-tier deploy --exec scripts/test-deploy

# `make deb`: .build/dist/wgkeeper_<version>_amd64.deb from the release binary (scripts/build-deb:
# dpkg-deb, Depends from dpkg-shlibdeps), then lintian, which fails the target on an error or
# warning not explained in deploy/debian/lintian-overrides, and on an override that no longer
# matches anything (a stale explanation).
deb: release
	@scripts/apt-ensure $(DEB_PACKAGES)
	rm -f .build/dist/wgkeeper_*.deb
	scripts/build-deb $(RELEASE_BIN) .build/dist
	lintian --fail-on error,warning -I .build/dist/wgkeeper_*_amd64.deb > .build/deb/lintian.log 2>&1; \
		status=$$?; grep -v '^I: ' .build/deb/lintian.log; exit $$status
	@! grep -E "^[EWI]: wgkeeper: (unused|mismatched)-override" .build/deb/lintian.log \
		|| { echo "error: deploy/debian/lintian-overrides explains a tag lintian no longer reports: remove it" >&2; exit 1; }
	@dpkg-deb --field .build/dist/wgkeeper_*_amd64.deb Version Depends Recommends Installed-Size

# Tier "system": the package under a real systemd (PID 1) in a VM on a bare Debian 12 root
# built with mmdebstrap (cached in .build/system): install, enable, traffic, reload, drift,
# restart, watchdog, stop, journal, exposure, purge. See scripts/test-system.
test-system: deb
	@[ "$$(id -u)" = 0 ] || { echo "error: the system tier needs root (mmdebstrap, the VM)" >&2; exit 1; }
	@scripts/apt-ensure $(SYSTEM_PACKAGES)
	scripts/run-tier system --exec scripts/test-system .build/dist/wgkeeper_*_amd64.deb

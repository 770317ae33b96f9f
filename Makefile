# wgkeeper — see README.md. Every target that needs system packages depends on `deps`,
# which installs only what is missing (Debian 12).
SWIFT        ?= swift
SWIFT_FLAGS  ?=
PREFIX       ?= /usr/local
DESTDIR      ?=

# Build and test: libraries and headers; iproute2, wireguard-tools and bpftool as independent
# readers; ping for the scenario; python3 jsonschema/yaml for the schema test (Debian's python3).
DEBIAN_PACKAGES = pkg-config libmnl-dev libbpf-dev libsystemd-dev iproute2 bpftool wireguard-tools iputils-ping python3-jsonschema python3-yaml

.PHONY: all demo deps build test test-unit test-kernel test-vm bench soak clean

all: build

deps:
	@command -v $(SWIFT) >/dev/null || { echo "error: '$(SWIFT)' not found: install Swift 6 (expected in /opt/swift/usr/bin)" >&2; exit 1; }
	@scripts/apt-ensure $(DEBIAN_PACKAGES)

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

# The gateway scenario of DESIGN §1, narrated, in network namespaces (in the VM when this
# kernel has no WireGuard). Leaves nothing behind.
demo: build
	@[ "$$(id -u)" = 0 ] || { echo "error: the demo needs root (network namespaces)" >&2; exit 1; }
	scripts/demo

# Every tier, then one closing line "N passed, M failed". Each tier runs even when an
# earlier one failed, so one run shows everything; the closing line decides the exit status.
test: deps
	@rm -f .build/test-summary
	-@$(MAKE) --no-print-directory test-unit
	-@$(MAKE) --no-print-directory test-kernel
	-@$(MAKE) --no-print-directory test-vm
	-@$(MAKE) --no-print-directory test-deploy
	@scripts/test-summary unit kernel vm deploy

# Tier 1: unit, no privileges.
test-unit: deps
	scripts/run-tier unit $(SWIFT_FLAGS) --skip KernelTests --skip VMTests

# Tier 2: root, throwaway network namespaces on the host kernel.
test-kernel: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: the kernel tier needs root (network namespaces, netlink writes)" >&2; exit 1; }
	$(SWIFT) build $(SWIFT_FLAGS)
	scripts/netns-sweep
	scripts/run-tier kernel $(SWIFT_FLAGS) --filter KernelTests; status=$$?; scripts/netns-sweep; exit $$status

# Tier 3: WireGuard and the end-to-end scenario, in a VM on Debian's 6.1 kernel.
test-vm: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: the VM tier needs root" >&2; exit 1; }
	scripts/run-tier vm --exec scripts/test-vm

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
	rm -rf .build

# --- Deployment (README "Installation") ----------------------------------------------------
# `make install [DESTDIR=...] [PREFIX=/usr/local]`: binary, systemd unit, tmpfiles entry,
# iproute2 protocol name, example configuration. Files in /etc that exist are never replaced.
# WGKEEPER_BIN installs a binary already built instead of building a release one.
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR    ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR         ?= $(PREFIX)/share/doc/wgkeeper
WGKEEPER_BIN   ?=

.PHONY: install uninstall test-deploy

install: $(if $(WGKEEPER_BIN),,deps)
	$(if $(WGKEEPER_BIN),,$(SWIFT) build -c release --product wgkeeper $(SWIFT_FLAGS))
	install -D -m 0755 "$(or $(WGKEEPER_BIN),$$($(SWIFT) build -c release --show-bin-path $(SWIFT_FLAGS))/wgkeeper)" "$(DESTDIR)$(PREFIX)/bin/wgkeeper"
	install -d -m 0755 "$(DESTDIR)$(SYSTEMDUNITDIR)" "$(DESTDIR)$(TMPFILESDIR)" "$(DESTDIR)$(DOCDIR)/examples/conf.d"
	sed 's|/usr/local/|$(PREFIX)/|g' deploy/wgkeeper.service > "$(DESTDIR)$(SYSTEMDUNITDIR)/wgkeeper.service"
	chmod 0644 "$(DESTDIR)$(SYSTEMDUNITDIR)/wgkeeper.service"
	install -m 0644 deploy/tmpfiles.d/wgkeeper.conf "$(DESTDIR)$(TMPFILESDIR)/wgkeeper.conf"
	install -m 0644 README.md deploy/wgkeeper.schema.json deploy/wgkeeper.yaml "$(DESTDIR)$(DOCDIR)/"
	install -m 0644 deploy/examples/conf.d/*.yaml "$(DESTDIR)$(DOCDIR)/examples/conf.d/"
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
	rm -rf "$(DESTDIR)$(DOCDIR)"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# Tier "deploy": the unit under systemd-analyze (verify, security <= 3.0), the ExecStart line
# against the binary, make install into a scratch DESTDIR, the installed example config.
test-deploy: deps
	scripts/run-tier deploy --exec scripts/test-deploy

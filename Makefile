# wgkeeper — see README.md. Every target that needs system packages depends on `deps`,
# which installs only what is missing (Debian 12).
SWIFT        ?= swift
SWIFT_FLAGS  ?=
PREFIX       ?= /usr/local
DESTDIR      ?=

# Build and test: libraries and headers, iproute2 as the independent reader, bpftool for map checks.
DEBIAN_PACKAGES = pkg-config libmnl-dev libbpf-dev libsystemd-dev iproute2 bpftool wireguard-tools

.PHONY: all deps build test test-unit test-kernel test-vm bench clean

all: build

deps:
	@command -v $(SWIFT) >/dev/null || { echo "error: '$(SWIFT)' not found: install Swift 6 (expected in /opt/swift/usr/bin)" >&2; exit 1; }
	@scripts/apt-ensure $(DEBIAN_PACKAGES)

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

# Every tier, then one closing line "N passed, M failed". Each tier runs even when an
# earlier one failed, so one run shows everything; the closing line decides the exit status.
test: deps
	@rm -f .build/test-summary
	-@$(MAKE) --no-print-directory test-unit
	-@$(MAKE) --no-print-directory test-kernel
	-@$(MAKE) --no-print-directory test-vm
	@scripts/test-summary unit kernel vm

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

bench: deps
	$(SWIFT) build -c release --product wgkeeper-bench
	scripts/bench-routes

clean:
	rm -rf .build

# wgkeeper — see README.md. Every target that needs system packages depends on `deps`,
# which installs only what is missing (Debian 12).
SWIFT        ?= swift
SWIFT_FLAGS  ?=
PREFIX       ?= /usr/local
DESTDIR      ?=

# Build and test: libraries and headers, iproute2 as the independent reader, bpftool for map checks.
DEBIAN_PACKAGES = pkg-config libmnl-dev libbpf-dev libsystemd-dev iproute2 bpftool

.PHONY: all deps build test test-unit test-kernel bench clean

all: build

deps:
	@command -v $(SWIFT) >/dev/null || { echo "error: '$(SWIFT)' not found: install Swift 6 (expected in /opt/swift/usr/bin)" >&2; exit 1; }
	@scripts/apt-ensure $(DEBIAN_PACKAGES)

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

# Tier 1 (unit, no privileges) and tier 2 (kernel: root, throwaway namespaces on the host kernel).
test: test-unit test-kernel

test-unit: deps
	$(SWIFT) test $(SWIFT_FLAGS) --skip KernelTests

test-kernel: deps
	@[ "$$(id -u)" = 0 ] || { echo "error: the kernel tier needs root (network namespaces, netlink writes)" >&2; exit 1; }
	scripts/netns-sweep
	$(SWIFT) test $(SWIFT_FLAGS) --filter KernelTests
	scripts/netns-sweep

bench: deps
	$(SWIFT) build -c release --product wgkeeper-bench
	scripts/bench-routes

clean:
	rm -rf .build

#!/usr/bin/env bash
# VM test tier runner: boots Debian's 6.1 kernel (which ships wireguard.ko)
# under QEMU/TCG with virtme-ng, using the host's root filesystem, and runs
# one command inside the guest as root with the repository writable.
#
# usage: Tests/Scenarios/vm/run.sh [--install] -- <command...>
#        Tests/Scenarios/vm/run.sh --install-only     (installs what is missing, boots nothing)
#
# The command is run as an argv (no shell); use `-- bash -c '...'` for shell
# syntax. Its working directory is the repository root.
#
# Exit status: the command's own exit status; 125 when the VM could not be
# started or the command did not run / its status was lost (e.g. a guest
# kernel panic); 124 when VM_TIMEOUT expired; 2 on a usage error.
#
# Environment knobs:
#   VM_KERNEL    path of the vmlinuz to boot (default: newest /boot/vmlinuz-6.1.*)
#   VM_MEMORY    guest memory (default 2G)
#   VM_CPUS      guest CPUs (default: host's nproc)
#   VM_TIMEOUT   seconds before the whole VM is killed (default 1800, 0 = none)
#   VM_RWDIRS    extra host directories (space separated) writable in the guest
#   VM_PASS_ENV  extra variable names (space separated) copied into the guest
#   VM_VERBOSE=1 show the guest kernel's boot console
#   VM_APPEND    extra guest kernel command line (e.g. mitigations=off, to measure its cost)
set -euo pipefail

prog=Tests/Scenarios/vm/run.sh
die() { # die STATUS MESSAGE...
    local rc=$1; shift
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit "$rc"
}
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
usage() {
    echo "usage: $prog [--install] -- <command...>   or   $prog --install-only" >&2
    exit 2
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd -P)

install=0 install_only=0
while [ $# -gt 0 ]; do
    case $1 in
        --install) install=1; shift ;;
        --install-only) install=1; install_only=1; shift ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) echo "$prog: unexpected argument: $1" >&2; usage ;;
    esac
done
[ $# -gt 0 ] || [ "$install_only" = 1 ] || usage

# ---------------------------------------------------------------- install ---
# Debian packages the VM tier needs on the host:
#   qemu-system-x86   qemu-system-x86_64 (TCG)
#   linux-image-amd64 the guest kernel (6.1) + /lib/modules/6.1.* (wireguard.ko)
#   busybox-static    virtme-ng builds its initramfs from a *static* busybox
#                     (replaces the dynamic `busybox` package; it Provides it)
#   wireguard-tools, iproute2: wg / ip / tc used by the tests inside the guest
#   traceroute, iputils-tracepath: the datapath's ICMPv6 errors seen by real tools
APT_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static wireguard-tools iproute2 traceroute iputils-tracepath)
PIP_PACKAGES=(virtme-ng)

# vng lives in the scripts directory of the python that installed it, which need not be on
# PATH (a pyenv shim appears only after a rehash): look there too.
vng_on_path() {
    command -v vng >/dev/null 2>&1 && return 0
    local dir
    dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    if [ -n "$dir" ] && [ -x "$dir/vng" ]; then PATH="$dir:$PATH"; export PATH; fi
    return 0
}

do_install() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 update -q
        # --no-install-recommends matters: with recommends, wireguard-tools
        # drags in an unrelated (rt) kernel image.
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
    fi
    if ! command -v vng >/dev/null 2>&1; then
        log "installing pip packages: ${PIP_PACKAGES[*]}"
        if ! python3 -m pip --version >/dev/null 2>&1; then
            apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 python3-pip
        fi
        # Debian's own python3 refuses system-wide pip installs (PEP 668) without the flag;
        # a pyenv or venv python takes the plain form.
        python3 -m pip install -q "${PIP_PACKAGES[@]}" 2>/dev/null \
            || python3 -m pip install -q --break-system-packages "${PIP_PACKAGES[@]}"
        command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null || true
        hash -r
    fi
    vng_on_path
}
[ "$install" = 0 ] || do_install
if [ "$install_only" = 1 ]; then
    vng_on_path
    command -v vng >/dev/null 2>&1 || die 125 "'vng' (pip package virtme-ng) not found after installing it"
    exit 0
fi

# -------------------------------------------------------------- preflight ---
vng_on_path
command -v vng >/dev/null 2>&1 \
    || die 125 "'vng' (pip package virtme-ng) not found on PATH; run $prog --install"
command -v qemu-system-x86_64 >/dev/null 2>&1 \
    || die 125 "qemu-system-x86_64 not found (Debian package qemu-system-x86); run $prog --install"
command -v timeout >/dev/null 2>&1 || die 125 "'timeout' (coreutils) not found"

if [ -n "${VM_KERNEL:-}" ]; then
    kernel=$VM_KERNEL
else
    # Newest Debian 6.1 kernel; other kernels (e.g. a 6.12-rt pulled in as
    # a recommends) are deliberately ignored.
    kernel=$(compgen -G '/boot/vmlinuz-6.1.*' | sort -V | tail -n 1 || true)
fi
[ -n "$kernel" ] \
    || die 125 "no guest kernel: /boot/vmlinuz-6.1.* not found (Debian package linux-image-amd64); run $prog --install"
[ -r "$kernel" ] || die 125 "guest kernel $kernel is not readable"
krel=${kernel##*/vmlinuz-}
# virtme-ng makes the guest load modules straight from the host's
# /lib/modules/<release>; without it modprobe wireguard fails in the guest.
[ -d "/lib/modules/$krel" ] \
    || die 125 "/lib/modules/$krel missing: the guest could not load modules (wireguard.ko)"

memory=${VM_MEMORY:-2G}
cpus=${VM_CPUS:-$(nproc)}
vm_timeout=${VM_TIMEOUT:-1800}

# ------------------------------------------------------------ inner side ---
# A host directory shared read-write with the guest carries the generated
# inner script, a "started" marker and the command's exit status, so the
# result never depends on vng's own status reporting alone.
state=$(mktemp -d "${TMPDIR:-/tmp}/wgkeeper-vm.XXXXXX")
trap 'rm -rf "$state"' EXIT

# The system's directories first: a version manager's shim on the host's PATH (pyenv's python3
# is a shell script that runs more shell scripts) costs 15 s a start in the guest, where every
# file comes over 9p uncached; Debian's own python3 starts in 1 s.
guest_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
{
    echo '#!/bin/bash'
    echo '# generated by Tests/Scenarios/vm/run.sh'
    printf 'export PATH=%q\n' "$guest_path"
    printf 'export HOME=%q\n' "${HOME:-/root}"
    echo 'export LANG=C.UTF-8'
    echo 'export WGKEEPER_IN_VM=1'
    for v in CI ${VM_PASS_ENV:-}; do
        if [ -n "${!v+x}" ]; then printf 'export %s=%q\n' "$v" "${!v}"; fi
    done
    printf 'cd %q || exit 125\n' "$REPO"
    printf ': > %q/started || exit 125\n' "$state"
    printf '%q ' "$@"; echo
    echo 'rc=$?'
    printf 'echo "$rc" > %q/rc.tmp && mv %q/rc.tmp %q/rc\n' "$state" "$state" "$state"
    echo 'sync'
    echo 'exit "$rc"'
} > "$state/inner.sh"

vng_cmd=(vng --disable-kvm --run "$kernel" --memory "$memory" --cpus "$cpus"
         --cwd "$REPO" --rwdir "$REPO" --rwdir "$state")
for d in ${VM_RWDIRS:-}; do
    [ -d "$d" ] || die 125 "VM_RWDIRS entry $d is not a directory"
    vng_cmd+=(--rwdir "$(cd "$d" && pwd -P)")
done
[ "${VM_VERBOSE:-0}" = 0 ] || vng_cmd+=(--verbose)
[ -z "${VM_APPEND:-}" ] || vng_cmd+=(--append "$VM_APPEND")
vng_cmd+=(--exec "bash $state/inner.sh")

log "kernel $kernel, ${cpus} CPU(s), ${memory} RAM, TCG (no KVM); command: $*"
start=$(date +%s)
# Output is piped through cat on purpose: vng makes QEMU reopen
# /proc/self/fd/1 and /proc/self/fd/2 several times, and when stdout is a
# regular file those independent opens overwrite each other (lost output).
set +e
timeout --kill-after=15 "$vm_timeout" "${vng_cmd[@]}" </dev/null 2>&1 | cat
statuses=("${PIPESTATUS[@]}")
set -e
vng_rc=${statuses[0]}
elapsed=$(( $(date +%s) - start ))

if [ "$vng_rc" = 124 ] && [ ! -f "$state/rc" ]; then
    die 124 "VM timed out after ${vm_timeout}s (VM_TIMEOUT) - command did not finish"
fi
if [ ! -f "$state/started" ]; then
    die 125 "the VM did not run the command (vng exit status $vng_rc after ${elapsed}s); rerun with VM_VERBOSE=1 to see the guest console"
fi
if [ ! -f "$state/rc" ]; then
    die 125 "the command started but its exit status was lost (guest crash/panic? vng exit status $vng_rc after ${elapsed}s)"
fi
rc=$(cat "$state/rc")
case $rc in ''|*[!0-9]*) die 125 "garbled exit status '$rc' from the guest" ;; esac
if [ "$rc" != "$vng_rc" ]; then
    log "note: vng reported $vng_rc, the command's recorded status is $rc (using $rc)"
fi
log "command exited with status $rc (VM wall clock ${elapsed}s)"
exit "$rc"

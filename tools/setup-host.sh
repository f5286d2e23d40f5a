#!/usr/bin/env bash
# Prepare a Debian/Ubuntu host to build, run and test hftpf. Idempotent: every step checks first and
# says what it did ("ok" = already in place, "done" = changed now, "WARN" = works, but read this).
#
#   sudo tools/setup-host.sh            # packages, kernel headers link, bpffs, .venv, pip install -e .[dev]
#   sudo tools/setup-host.sh --no-apt   # skip apt (packages already installed)
#
# Why each step exists:
#  - BCC compiles the probe at load time against kernel headers found at /lib/modules/$(uname -r)/build.
#    Kernels without a headers package (cloud/VM kernels) have no such directory; the distro's
#    linux-headers package is close enough for the uapi headers the probe includes (see bpf/README).
#  - Pins live on bpffs (/sys/fs/bpf); some boots do not mount it.
#  - BCC's Python module comes from the distro (python3-bpfcc) and only the distro Python sees it, so the
#    virtualenv is made by /usr/bin/python3 with --system-site-packages.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
do_apt=1
for arg in "$@"; do
  case "$arg" in
    --no-apt) do_apt=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup-host: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

say()  { printf 'setup-host: %-5s %s\n' "$1" "$2"; }
fail() { printf 'setup-host: FAIL  %s\n' "$1" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (sudo tools/setup-host.sh): it installs packages and mounts bpffs"
command -v apt-get >/dev/null || fail "apt-get not found: this script supports Debian and Ubuntu only"

# ---- 1. packages ----------------------------------------------------------------------------------
# Core: what the agent needs to compile, attach and run (python3-dev + gcc also build the optional C
# decoders, hft_packetfilter._native, at pip install). Peers: real tools the tests and benchmarks
# compare against (tshark, xdp-filter, prometheus, tcpreplay, QuickFIX's executor).
core_pkgs=(python3-bpfcc bpfcc-tools libbpfcc python3-venv python3-pip python3-dev iproute2 iputils-ping tcpdump gcc libc6-dev
           sudo ca-certificates tzdata)   # tzdata: the per-exchange timezone (ITCH feed latency)
peer_pkgs=(xdp-tools tshark tcpreplay prometheus tmux libquickfix-doc libquickfix17)
case "$(. /etc/os-release; echo "${ID}")" in
  ubuntu) hdr_pkg="linux-headers-generic" ;;
  *)      hdr_pkg="linux-headers-amd64"; [ "$(dpkg --print-architecture)" = arm64 ] && hdr_pkg="linux-headers-arm64" ;;
esac
want=("${core_pkgs[@]}" "$hdr_pkg" "${peer_pkgs[@]}")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  say ok "packages: all ${#want[@]} present"
elif [ $do_apt -eq 0 ]; then
  say WARN "packages missing and --no-apt given: ${missing[*]}"
else
  say ...  "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer "no" so the install never blocks.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q >/dev/null
  # Core packages must install; peers are best-effort (a missing peer is reported by the benchmark).
  apt-get install -y -q --no-install-recommends "${core_pkgs[@]}" "$hdr_pkg" >/dev/null \
    || fail "apt-get could not install the core packages (${core_pkgs[*]} $hdr_pkg)"
  for p in "${peer_pkgs[@]}"; do
    apt-get install -y -q --no-install-recommends "$p" >/dev/null 2>&1 || say WARN "optional peer $p not installable"
  done
  say done "packages installed"
fi

# ---- 2. kernel headers where BCC looks ---------------------------------------------------------------
kver=$(uname -r)
moddir=/lib/modules/$kver
if [ -e "$moddir/build/include" ] || [ -e "$moddir/build/Makefile" ]; then
  say ok "kernel headers: $moddir/build -> $(readlink -f "$moddir/build")"
else
  # Pick the newest distro headers tree (arch-specific dir holds the generated headers).
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 /usr/src/linux-headers-*-generic 2>/dev/null \
        | sort -V | tail -n 1 || true)
  [ -n "$hdr" ] || fail "no /usr/src/linux-headers-* tree: install $hdr_pkg (or the headers for kernel $kver)"
  common=${hdr%-amd64}; common=${common%-arm64}; common=${common%-generic}-common
  [ -d "$common" ] || common=$hdr
  mkdir -p "$moddir"
  ln -sfn "$hdr" "$moddir/build"
  ln -sfn "$common" "$moddir/source"
  say done "linked $moddir/build -> $hdr and source -> $common"
  say WARN "these headers are for $(basename "$hdr" | sed 's/linux-headers-//'), not the running kernel $kver;"
  say WARN "the probe includes only uapi headers (stable ABI) so this works, but kernel-internal headers would not match"
fi

# ---- 3. bpffs -----------------------------------------------------------------------------------------
if mountpoint -q /sys/fs/bpf && [ "$(stat -f -c %T /sys/fs/bpf)" = "bpf_fs" ]; then
  say ok "bpffs mounted at /sys/fs/bpf"
else
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf || fail "could not mount bpffs at /sys/fs/bpf (is CONFIG_BPF_SYSCALL set?)"
  say done "mounted bpffs at /sys/fs/bpf (not persistent: add 'bpffs /sys/fs/bpf bpf defaults 0 0' to /etc/fstab)"
fi

# ---- 4. virtualenv with the distro's bcc ----------------------------------------------------------------
venv=$here/.venv
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import bcc' 2>/dev/null; then
  say ok "virtualenv $venv ($("$venv/bin/python" -V 2>&1)) sees bcc"
else
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv" || fail "could not create $venv with /usr/bin/python3"
  "$venv/bin/python" -c 'import bcc' 2>/dev/null \
    || fail "bcc does not import in $venv: is python3-bpfcc installed for $(/usr/bin/python3 -V)?"
  say done "created $venv from /usr/bin/python3 ($("$venv/bin/python" -V 2>&1)) with system site-packages"
fi
# pip is quick when everything is already satisfied; always run it so new dependencies land.
"$venv/bin/python" -m pip install -q -e "$here[dev]" || fail "pip install -e .[dev] failed (see above)"
say done "installed hft-packetfilter (editable) with dev extras into $venv"
if "$venv/bin/python" -c 'import hft_packetfilter._native' 2>/dev/null; then
  say ok "native decoders built (hft_packetfilter._native)"
else
  say WARN "native decoders not built: the pure-Python ones run (need gcc and python3-dev, then rerun)"
fi

# ---- 5. quick self-check ---------------------------------------------------------------------------------
if "$venv/bin/hftpf-agent" check --quiet; then
  say ok "hftpf-agent check: the probe compiles and this host can attach it"
else
  say WARN "hftpf-agent check reported problems: run '$venv/bin/hftpf-agent check' for details"
fi

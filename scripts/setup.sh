#!/usr/bin/env bash
# Installs tandem's build and test dependencies from Debian packages and builds a preset.
# Idempotent: apt skips what is installed, cmake rebuilds only what changed.
#   usage: scripts/setup.sh [PRESET]    (default: release; also dev, asan)
set -euo pipefail
preset=${1:-release}
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config git
  libevent-dev libssl-dev libboost-program-options-dev
  libnetfilter-queue-dev libmnl-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  iproute2 iptables nftables iperf3 curl python3 procps ethtool
  clang libbpf-dev linux-libc-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "setup: need root to install packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)"
echo "setup: built preset $preset in build/$preset"

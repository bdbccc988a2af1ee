#!/usr/bin/env bash
# The README's test command (and CI's, through .ci/run): installs what it needs, builds from
# scratch, and runs every test:
#   1. release build (-Werror): unit tests, layering check, fuzz-corpus replay, and the
#      integration tests that run real kernel TCP through tandemd in network namespaces;
#   2. ASan+UBSan build: the unit tests and fuzz-corpus replay again.
# Needs root (packages, namespaces, NFQUEUE). Exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (it installs packages and creates network namespaces)" >&2
  exit 1
fi

rm -rf build/ci build/ci-asan
bash scripts/setup.sh ci
ctest --preset ci
bash scripts/setup.sh ci-asan
ctest --preset ci-asan

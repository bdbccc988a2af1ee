#!/usr/bin/env bash
# Checks the layering rule of ../shared/STYLE.md: common/ and the pure cores include no event
# loop, socket, Boost or netfilter headers. Prints each offending line; exits 1 if any.
set -u
root=${1:?usage: layering.sh PROJECT_ROOT}
bad=$(grep -nE '#include *[<"](event2/|boost/|libnetfilter|libmnl|linux/netfilter|sys/socket\.h|netinet/|sys/epoll)' \
  "$root"/common/*.{h,cc} "$root"/proxy/core/*.{h,cc} "$root"/sync/*.{h,cc} 2>/dev/null)
if [ -n "$bad" ]; then
  echo "FAIL layering: pure cores include I/O headers:"
  echo "$bad"
  exit 1
fi
echo "PASS layering: common/, proxy/core/ and sync/ include no I/O headers"

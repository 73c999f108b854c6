#!/usr/bin/env bash
# The benchmark's packages on top of scripts/deps.sh (Debian; run as root): sockperf for the
# loopback round trip, qemu-storage-daemon (qemu-utils) for the QEMU mirror anchor, and perf and
# strace for bench/profile.sh. Idempotent: no apt when every tool is there.
set -euo pipefail
need=()
command -v sockperf            >/dev/null 2>&1 || need+=(sockperf)
command -v qemu-storage-daemon >/dev/null 2>&1 || need+=(qemu-utils)
command -v perf                >/dev/null 2>&1 || need+=(linux-perf)
command -v strace              >/dev/null 2>&1 || need+=(strace)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench/deps.sh: missing packages ${need[*]}; run as root (or: sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
for t in sockperf qemu-storage-daemon perf strace; do
  command -v "$t" >/dev/null 2>&1 || { echo "bench/deps.sh: $t still missing after install" >&2; exit 1; }
done

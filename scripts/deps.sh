#!/usr/bin/env bash
# Install the system packages rep's demo, tests and benchmarks use (Debian; run as root).
# Idempotent: skips apt entirely when every tool is already present.
set -euo pipefail
need=()
command -v nbdinfo   >/dev/null 2>&1 || need+=(libnbd-bin)
command -v nbdfuse   >/dev/null 2>&1 || need+=(libnbd-bin)
command -v nbdkit    >/dev/null 2>&1 || need+=(nbdkit)
command -v fio       >/dev/null 2>&1 || need+=(fio)
command -v qemu-io   >/dev/null 2>&1 || need+=(qemu-utils)
command -v drbdadm   >/dev/null 2>&1 || need+=(drbd-utils)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup   >/dev/null 2>&1 || need+=(mount)
command -v python3   >/dev/null 2>&1 || need+=(python3)
command -v iptables  >/dev/null 2>&1 || need+=(iptables)
command -v ip        >/dev/null 2>&1 || need+=(iproute2)
command -v ss        >/dev/null 2>&1 || need+=(iproute2)
# resync_info's network limit: a tbf qdisc on a namespace's loopback.
command -v tc        >/dev/null 2>&1 || need+=(iproute2)
# Operations tests: systemd-analyze verifies the units, script(1) gives repadm a terminal.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v script    >/dev/null 2>&1 || need+=(bsdutils)
# Pacemaker integration (tests/tests/pacemaker.rs): a one-node cluster, crmsh, ocf-tester.
command -v corosync      >/dev/null 2>&1 || need+=(corosync)
command -v pacemakerd    >/dev/null 2>&1 || need+=(pacemaker)
command -v cibadmin      >/dev/null 2>&1 || need+=(pacemaker-cli-utils)
command -v crm           >/dev/null 2>&1 || need+=(crmsh)
command -v ocf-tester    >/dev/null 2>&1 || need+=(resource-agents)
command -v xmllint       >/dev/null 2>&1 || need+=(libxml2-utils)
# ocf:heartbeat:Filesystem refuses to run without modprobe, even on a kernel without modules.
command -v modprobe      >/dev/null 2>&1 || need+=(kmod)
# keepalived / ucarp failover and the reconnecting client (tests/tests/ha_*.rs).
command -v keepalived >/dev/null 2>&1 || need+=(keepalived)
command -v ucarp     >/dev/null 2>&1 || need+=(ucarp)
# Debian 12 backports' qemu-utils ships it; on releases where it lives elsewhere see below.
command -v qemu-storage-daemon >/dev/null 2>&1 || need+=(qemu-utils)
# Heartbeat R1 with ha/heartbeat/repdisk (tests/tests/ha_heartbeat.rs).
[ -x /usr/libexec/heartbeat/heartbeat ] || need+=(heartbeat)
command -v nsenter   >/dev/null 2>&1 || need+=(util-linux)
# TLS tests (tests/tests/tls.rs) make their certificates with openssl.
command -v openssl   >/dev/null 2>&1 || need+=(openssl)
command -v flock     >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: missing packages ${need[*]}; run as root (or: sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  mapfile -t need < <(printf "%s\n" "${need[@]}" | sort -u)
  apt-get install -y -qq "${need[@]}" >/dev/null
  # Some Debian releases put qemu-storage-daemon into qemu-system-common.
  command -v qemu-storage-daemon >/dev/null 2>&1 || apt-get install -y -qq qemu-system-common >/dev/null
fi
[ -x /usr/libexec/heartbeat/heartbeat ] || { echo "deps.sh: heartbeat still missing after install" >&2; exit 1; }
# nbdfuse may come with libnbd-bin on some releases; check the tools, not the package names.
for t in nbdinfo nbdfuse nbdcopy nbdkit fio qemu-io drbdadm mkfs.ext4 losetup iptables ip ss tc \
  systemd-analyze script corosync pacemakerd cibadmin crm_mon crm_attribute crm ocf-tester \
  xmllint modprobe keepalived ucarp qemu-storage-daemon nsenter flock openssl; do
  command -v "$t" >/dev/null 2>&1 || { echo "deps.sh: $t still missing after install" >&2; exit 1; }
done

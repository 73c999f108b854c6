#!/bin/sh
# ucarp upscript: `ucarp ... -u vip-up.sh -x /etc/rep/ha.conf` runs `vip-up.sh IFACE VIP CONF`.
# Adds the floating address, then promotes through rep-notify.sh in the background: ucarp waits
# for its scripts and sends no advertisements meanwhile (the seeds' vip-up does the same with
# its setup script). The notification's sequence number is taken here, before backgrounding, so
# that a vip-down that follows supersedes it even if the two run out of order.
set -u
IFACE=$1 VIP=$2 CONF=${3:-/etc/rep/ha.conf}
[ -r "$CONF" ] && . "$CONF"
NOTIFY=${REP_HA_NOTIFY:-/etc/rep/ha/rep-notify.sh}
ip addr add "$VIP/${REP_HA_VIP_PREFIX:-24}" dev "$IFACE" 2>/dev/null || true
REP_HA_SEQ=$(date +%s%N) setsid "$NOTIFY" -c "$CONF" master </dev/null >/dev/null 2>&1 &
exit 0

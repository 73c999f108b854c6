#!/bin/sh
# ucarp downscript: `vip-down.sh IFACE VIP CONF`. Removes the floating address (the seeds'
# vip-down re-adds it: a typo), then demotes through rep-notify.sh in the background.
set -u
IFACE=$1 VIP=$2 CONF=${3:-/etc/rep/ha.conf}
[ -r "$CONF" ] && . "$CONF"
NOTIFY=${REP_HA_NOTIFY:-/etc/rep/ha/rep-notify.sh}
ip addr del "$VIP/${REP_HA_VIP_PREFIX:-24}" dev "$IFACE" 2>/dev/null || true
REP_HA_SEQ=$(date +%s%N) setsid "$NOTIFY" -c "$CONF" backup </dev/null >/dev/null 2>&1 &
exit 0

#!/bin/sh
# rep-notify.sh: the keepalived / ucarp notify script of a rep resource, in the style of the
# seeds' keepalived_drbd_mfs.sh (docs/failover-keepalived.md).
#
#   rep-notify.sh [-c CONF] master|backup|fault|stop|check [RES]
#
# master       check that the local data may be promoted (below), then `repadm primary RES`
#              (never --force; retried while the peer is still seen as Primary, because the old
#              Primary's death takes the engine a moment to notice), then the optional attach,
#              mount and service start.
# backup|fault|stop
#              stop the service, unmount, detach, reset the NBD clients still connected over
#              TCP (the floating address has moved: they must reconnect to the new Primary),
#              then `repadm secondary RES`.
# check        exit 0 when this node is Primary with usable data or could be promoted, 1 when
#              not (a keepalived vrrp_script: the node goes FAULT instead of taking the address).
#
# The master path refuses, and logs why, when the local disk is Outdated, Inconsistent, Failed
# or Diskless without an UpToDate peer, or the resource is StandAlone (split brain, unrelated
# data, or disconnected by hand: this node cannot tell whether its data is the newest). Every
# other state is left to `repadm primary`, which knows the fencing rules (a refusal is logged).
#
# Configuration: CONF (default /etc/rep/ha.conf, see ha/rep-ha.conf.example) is sourced if it
# exists; it sets REP_CONFIG / REP_NODE / REP_RUN_DIR for repadm and the REP_HA_* variables.
#
# Exit codes:
#   0  done (or nothing to do: already in the wanted role)
#   1  usage or configuration error
#   2  refused: the local data is not safe to promote (the reason is logged)
#   3  promotion failed: repadm refused, the resource is not up, or the peer was still seen as
#      Primary after REP_HA_PROMOTE_WAIT seconds
#   4  promoted, but attach, mount or service start failed
#   5  demotion failed: stop, unmount or detach failed, or `repadm secondary` refused
#   6  superseded: a newer notification for this resource arrived meanwhile
#   (check: 0 usable / promotable, 1 not)
#
# Log lines: `<unix time> rep-notify[<pid>] <res> <action>: <message>` on stderr, appended to
# REP_HA_LOG, and to syslog (tag rep-notify, facility daemon) through logger(1) when present.

set -u

usage() {
	echo "usage: rep-notify.sh [-c CONF] master|backup|fault|stop|check [RES]" >&2
	exit 1
}

CONF=/etc/rep/ha.conf
CONF_GIVEN=0
while getopts c: opt; do
	case $opt in
	c) CONF=$OPTARG; CONF_GIVEN=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] && [ $# -le 2 ] || usage
ACTION=$1
if [ -r "$CONF" ]; then
	# shellcheck disable=SC1090
	. "$CONF"
elif [ "$CONF_GIVEN" = 1 ]; then
	echo "rep-notify.sh: cannot read the configuration $CONF (-c)" >&2
	exit 1
fi
RES=${2:-${REP_HA_RESOURCE:-}}
[ -n "$RES" ] || { echo "rep-notify.sh: no resource: give RES or set REP_HA_RESOURCE in $CONF" >&2; exit 1; }

REPADM=${REPADM:-repadm}
LOG_FILE=${REP_HA_LOG:-/var/log/rep-ha.log}
PROMOTE_WAIT=${REP_HA_PROMOTE_WAIT:-30}
DEMOTE_WAIT=${REP_HA_DEMOTE_WAIT:-30}
STATE_DIR=${REP_HA_STATE_DIR:-${REP_RUN_DIR:-/run/rep}}
export REP_CONFIG REP_NODE REP_RUN_DIR 2>/dev/null || true

log() {
	line="$(date +%s.%N) rep-notify[$$] $RES $ACTION: $*"
	printf '%s\n' "$line" >&2
	printf '%s\n' "$line" >>"$LOG_FILE" 2>/dev/null || true
	if [ "${REP_HA_SYSLOG:-1}" = 1 ] && command -v logger >/dev/null 2>&1; then
		logger -t rep-notify -p daemon.notice -- "$RES $ACTION: $*" 2>/dev/null || true
	fi
}

# Every repadm call is bounded: a wedged daemon must not hang keepalived's script forever.
repadm_() {
	timeout 10 "$REPADM" "$@"
}

# ROLE PEER_ROLE CSTATE DISK PEER_DISK from `repadm --json role` (one flat JSON line);
# returns 1 (with the reason in STATE_ERR) when the resource is not up.
read_state() {
	if ! out=$(repadm_ --json role "$RES" 2>&1); then
		STATE_ERR=$out
		return 1
	fi
	ROLE=$(field role "$out")
	PEER_ROLE=$(field peer_role "$out")
	CSTATE=$(field cstate "$out")
	DISK=$(field disk "$out")
	PEER_DISK=$(field peer_disk "$out")
	QUORUM=off
	case $out in
	*'"quorum_enabled":true'*)
		case $out in *'"quorum":true'*) QUORUM=yes ;; *) QUORUM=no ;; esac ;;
	esac
	[ -n "$ROLE" ] || { STATE_ERR="cannot read the state from: $out"; return 1; }
}

field() {
	printf '%s\n' "$2" | sed -n "s/.*[{,]\"$1\":\"\([^\"]*\)\".*/\1/p"
}

state_text() {
	echo "role $ROLE/$PEER_ROLE, cstate $CSTATE, disk $DISK/$PEER_DISK${QUORUM:+, quorum $QUORUM}"
}

# Sets UNSAFE to the reason this node's data must not be promoted, or empty when repadm may
# decide. TRANSIENT=1 for states that pass by themselves (attach, handshake): wait, retry.
judge() {
	UNSAFE=
	TRANSIENT=0
	case $CSTATE in
	StandAlone)
		UNSAFE="StandAlone (split brain, unrelated data, or disconnected by hand): this node cannot tell whether its data is the newest; resolve it with the split-brain runbook (docs/failover-keepalived.md), then \`repadm connect $RES\`"
		return ;;
	esac
	if [ "$QUORUM" = no ]; then
		UNSAFE="no quorum: this node sees too few of its peers (status quorum:no), and the nodes it cannot see may be serving; it is promoted once it is connected again (docs/quorum.md)"
		return
	fi
	case $DISK in
	Outdated)
		UNSAFE="disk is Outdated: the peer has or had newer data, promoting would lose its writes; bring the peer back (it resyncs this node), or if it is gone for good and losing its writes is accepted, \`repadm primary --force $RES\` by hand" ;;
	Inconsistent)
		UNSAFE="disk is Inconsistent (a resync that did not finish): its data is not usable" ;;
	Failed | Diskless)
		if [ "$PEER_DISK" != UpToDate ]; then
			UNSAFE="disk is $DISK and the peer's disk is $PEER_DISK: no UpToDate data reachable"
		fi ;;
	Attaching | Negotiating)
		TRANSIENT=1 ;;
	esac
}

# Sequence number of this notification: a later one supersedes it (keepalived runs notify
# scripts asynchronously and ucarp's scripts here run in the background, so two may overlap).
SEQ=${REP_HA_SEQ:-$(date +%s%N)}
WANT=$STATE_DIR/$RES.ha-want

claim() {
	mkdir -p "$STATE_DIR" 2>/dev/null
	exec 8>"$WANT.lock"
	flock 8
	cur=$(cut -d' ' -f2 "$WANT" 2>/dev/null || echo 0)
	if [ "${cur:-0}" -gt "$SEQ" ] 2>/dev/null; then
		flock -u 8
		log "superseded by a newer notification ($(cat "$WANT" 2>/dev/null))"
		exit 6
	fi
	echo "$1 $SEQ" >"$WANT"
	flock -u 8
	exec 8>&-
}

still_wanted() {
	[ "$(cut -d' ' -f2 "$WANT" 2>/dev/null)" = "$SEQ" ]
}

# One action at a time per resource; a waiting one re-checks that it is still wanted.
serialize() {
	exec 9>"$STATE_DIR/$RES.ha-lock"
	flock 9
	if ! still_wanted; then
		log "superseded while waiting for the previous notification ($(cat "$WANT" 2>/dev/null))"
		exit 6
	fi
}

run_hook() { # NAME COMMAND
	[ -n "$2" ] || return 0
	log "$1: $2"
	if ! out=$(sh -c "$2" 2>&1); then
		log "$1 failed: $out"
		return 1
	fi
}

now_s() { date +%s; }

on_fail() {
	[ -n "${REP_HA_ON_FAIL:-}" ] && run_hook on-fail "$REP_HA_ON_FAIL"
	exit "$1"
}

do_master() {
	claim master
	serialize
	t0=$(date +%s%N)
	deadline=$(($(now_s) + PROMOTE_WAIT))
	tries=0
	waited=
	while :; do
		if ! still_wanted; then
			log "superseded while promoting ($(cat "$WANT" 2>/dev/null)); not promoting"
			exit 6
		fi
		if ! read_state; then
			log "refused: resource not up: $STATE_ERR"
			on_fail 3
		fi
		judge
		if [ -n "$UNSAFE" ]; then
			log "refused to promote ($(state_text)): $UNSAFE"
			on_fail 2
		fi
		[ "$ROLE" = Primary ] && break
		if [ "$PEER_ROLE" = Primary ] || [ "$TRANSIENT" = 1 ]; then
			if [ -z "$waited" ]; then
				log "waiting ($(state_text)): the peer is still seen as Primary or the disk is settling"
				waited=1
			fi
		else
			tries=$((tries + 1))
			out=$(repadm_ --json primary "$RES" 2>&1)
			rc=$?
			if [ $rc -eq 0 ]; then
				break
			fi
			case $out in
			*'"TwoPrimaries"'* | *'"ConcurrentStateChange"'*) ;;
			*)
				log "repadm primary refused (exit $rc, $(state_text)): $(printf '%s' "$out" | tail -n 1)"
				on_fail 3 ;;
			esac
		fi
		if [ "$(now_s)" -ge "$deadline" ]; then
			log "not promoting: the peer was still seen as Primary after ${PROMOTE_WAIT}s ($(state_text)); if it is alive (a VRRP-only partition) two Primaries would split the data"
			on_fail 3
		fi
		sleep 0.02
	done
	ms=$((($(date +%s%N) - t0) / 1000000))
	log "Primary after ${ms} ms, $tries repadm call(s)"
	run_hook attach "${REP_HA_ATTACH_CMD:-}" || on_fail 4
	if [ -n "${REP_HA_MOUNT_POINT:-}" ] && ! mountpoint -q "$REP_HA_MOUNT_POINT"; then
		run_hook mount "mount ${REP_HA_MOUNT_OPTS:+-o $REP_HA_MOUNT_OPTS} $REP_HA_MOUNT_DEV $REP_HA_MOUNT_POINT" || on_fail 4
	fi
	run_hook start "${REP_HA_START_CMD:-}" || on_fail 4
	log "master: done"
	exit 0
}

# Reset the TCP connections of NBD clients (nbd-listen): the floating address is gone, so they
# would hold the export open (and `secondary` refused) until their own timeouts. The address
# goes first (REP_HA_VIP): keepalived may still hold it while notify_stop runs, and a client
# reset while it is here reconnects to this node at once.
reset_tcp_clients() {
	[ "${REP_HA_RESET_TCP_CLIENTS:-1}" = 1 ] || return 0
	if [ -n "${REP_HA_VIP:-}" ] && [ -n "${REP_HA_VIP_DEV:-}" ] &&
		ip -o addr show dev "$REP_HA_VIP_DEV" 2>/dev/null | grep -q " inet $REP_HA_VIP "; then
		if ip addr del "$REP_HA_VIP" dev "$REP_HA_VIP_DEV" 2>/dev/null; then
			log "removed the floating address $REP_HA_VIP from $REP_HA_VIP_DEV"
		fi
	fi
	listen=$(repadm_ status --json "$RES" 2>/dev/null | sed -n 's/.*"nbd_listen": *"\([^"]*\)".*/\1/p')
	[ -n "$listen" ] || return 0
	port=${listen##*:}
	n=$(ss -Htn state established "( sport = :$port )" 2>/dev/null | wc -l)
	[ "$n" -gt 0 ] || return 0
	log "resetting $n NBD client connection(s) on port $port"
	ss -K -tn state established "( sport = :$port )" >/dev/null 2>&1 || log "ss -K failed (kernel without CONFIG_INET_DIAG_DESTROY?)"
}

do_backup() {
	claim "$ACTION"
	serialize
	failed=0
	run_hook stop "${REP_HA_STOP_CMD:-}" || failed=1
	if [ -n "${REP_HA_MOUNT_POINT:-}" ] && mountpoint -q "$REP_HA_MOUNT_POINT"; then
		run_hook umount "umount $REP_HA_MOUNT_POINT" || failed=1
	fi
	run_hook detach "${REP_HA_DETACH_CMD:-}" || failed=1
	if ! read_state; then
		log "resource not up: nothing to demote ($STATE_ERR)"
		exit $((failed * 5))
	fi
	if [ "$ROLE" != Primary ]; then
		log "already $ROLE ($(state_text))"
		exit $((failed * 5))
	fi
	deadline=$(($(now_s) + DEMOTE_WAIT))
	while :; do
		reset_tcp_clients
		if out=$(repadm_ --json secondary "$RES" 2>&1); then
			log "Secondary ($(read_state && state_text))"
			exit $((failed * 5))
		fi
		case $out in
		*'"DeviceInUse"'*) ;;
		*)
			log "repadm secondary refused: $(printf '%s' "$out" | tail -n 1)"
			exit 5 ;;
		esac
		if [ "$(now_s)" -ge "$deadline" ]; then
			log "repadm secondary still refused after ${DEMOTE_WAIT}s: $(printf '%s' "$out" | tail -n 1)"
			exit 5
		fi
		sleep 0.1
	done
}

do_check() {
	read_state || { echo "$RES: not up: $STATE_ERR" >&2; exit 1; }
	if [ "$ROLE" = Primary ]; then
		if [ "$QUORUM" = no ]; then
			echo "$RES: Primary without quorum ($(state_text)): its I/O fails or is frozen" >&2
			exit 1
		fi
		case $DISK in
		UpToDate) exit 0 ;;
		Diskless | Failed) [ "$PEER_DISK" = UpToDate ] && exit 0 ;;
		esac
		echo "$RES: Primary without usable data ($(state_text))" >&2
		exit 1
	fi
	judge
	if [ -n "$UNSAFE" ] || [ "$TRANSIENT" = 1 ]; then
		echo "$RES: not promotable ($(state_text)): ${UNSAFE:-settling}" >&2
		exit 1
	fi
	exit 0
}

case $ACTION in
master | MASTER) ACTION=master; log "notified (seq $SEQ)"; do_master ;;
backup | BACKUP | fault | FAULT | stop | STOP)
	ACTION=$(echo "$ACTION" | tr 'A-Z' 'a-z'); log "notified (seq $SEQ)"; do_backup ;;
check) do_check ;;
*) usage ;;
esac

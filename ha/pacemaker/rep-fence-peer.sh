#!/bin/bash
#
# rep-fence-peer.sh — rep's fence-peer handler for Pacemaker, the counterpart of drbd-utils'
# crm-fence-peer.sh; `rep-fence-peer.sh --unfence` (installed as rep-unfence-peer.sh) is
# crm-unfence-peer.sh.
#
# fence: adds the location constraint
#     <rsc_location id="rep-fence-by-handler-RES-CLONE" rsc="CLONE">
#       <rule role="Promoted" score="-INFINITY"> #uname ne THIS-NODE </rule>
# so that Pacemaker cannot promote the rep resource RES on any node but this one (the one
# with the good data) until the peer has resynced. Exit codes are those of DRBD's fence-peer
# protocol:
#     3  the peer's disk is Inconsistent (constraint placed)
#     4  the peer is reachable and now fenced by the constraint (or it already was)
#     5  the peer is unreachable (not a cluster member), assumed dead; constraint placed
#        when this node's disk is UpToDate
#     7  the peer was STONITHed (Pacemaker's fencing history says so); constraint placed
#     1  nothing fenced: no cluster/DC, resource not found in the CIB, this node's state
#        unknown, the peer's disk UpToDate (nothing to fence), or another node's constraint
#        is in place (this node is the fenced one)
#    (6, "the peer is Primary", is never returned, as with crm-fence-peer.sh.)
#
# unfence: removes that constraint once this node and its peer are both UpToDate and
# connected (waits up to --timeout seconds for it: after-resync-target runs right at the end
# of the resync); exit 0 when removed or absent, 1 when left in place.
#
# Environment (set by repd for handlers): DRBD_RESOURCE, DRBD_PEERS (or DRBD_PEER), DRBD_CONF,
# REP_NODE, REP_RUN_DIR;
# REP_REPADM (the repadm binary; default: repadm in PATH).
#
# Options (each overrides the environment):
#   -r|--resource RES        rep resource (DRBD_RESOURCE)
#   -i|--clone-id ID         id of the promotable clone (default: found in the CIB as the
#                            clone of an ocf:rep:rep primitive with resource=RES)
#   -l|--role ROLE           role to forbid: Promoted (default), or Master for Pacemaker < 2.1
#   -p|--id-prefix PREFIX    constraint id prefix (default rep-fence-by-handler); RES is appended
#   -n|--node-name NAME      this node's name in the cluster (default: crm_node -n)
#   --peer NAME              the peer's cluster node name (default: DRBD_PEERS)
#   -t|--timeout SECONDS     how long to wait for the DC (fence) or for UpToDate/UpToDate
#                            (unfence); default 20
#   --config FILE --rep-node NAME --run-dir DIR --repadm PATH   how to reach repadm
#   --unfence                remove the constraint instead

set -o pipefail
PATH="$PATH:/usr/sbin:/usr/local/sbin:/usr/local/bin"
PROG=rep-fence-peer
mode=fence
case ${0##*/} in rep-unfence-peer*) mode=unfence PROG=rep-unfence-peer ;; esac

res=${DRBD_RESOURCE:-}
peer=${DRBD_PEERS:-${DRBD_PEER:-}}
peer=${peer%% *}
config=${DRBD_CONF:-${REP_CONFIG:-}}
rep_node=${REP_NODE:-}
run_dir=${REP_RUN_DIR:-}
repadm=${REP_REPADM:-repadm}
clone_id=""
role=Promoted
id_prefix=rep-fence-by-handler
me=""
timeout=20

say() { echo "$PROG: $*" >&2; }

while [ $# -gt 0 ]; do
	case $1 in
	-r | --resource) res=$2; shift ;;
	--resource=*) res=${1#*=} ;;
	-i | --clone-id | --master-id) clone_id=$2; shift ;;
	--clone-id=* | --master-id=*) clone_id=${1#*=} ;;
	-l | --role) role=$2; shift ;;
	--role=*) role=${1#*=} ;;
	-p | --id-prefix) id_prefix=$2; shift ;;
	--id-prefix=*) id_prefix=${1#*=} ;;
	-n | --node-name) me=$2; shift ;;
	--node-name=*) me=${1#*=} ;;
	--peer) peer=$2; shift ;;
	--peer=*) peer=${1#*=} ;;
	-t | --timeout) timeout=$2; shift ;;
	--timeout=*) timeout=${1#*=} ;;
	--config) config=$2; shift ;;
	--rep-node) rep_node=$2; shift ;;
	--run-dir) run_dir=$2; shift ;;
	--repadm) repadm=$2; shift ;;
	--unfence) mode=unfence PROG=rep-unfence-peer ;;
	*) say "ignoring unknown argument $1" ;;
	esac
	shift
done

if [ -z "$res" ]; then
	say "no resource: DRBD_RESOURCE is not set (repd sets it for handlers) and no --resource given"
	exit 1
fi
case $timeout in '' | *[!0-9]*) say "--timeout must be whole seconds, not '$timeout'"; exit 1 ;; esac
# The id must not depend on who places it: the other node's constraint has the same id,
# which is how a fenced node recognises that it is the fenced one.
id_prefix="$id_prefix-$res"

repadm_state() {
	local args=()
	[ -n "$config" ] && args+=(-c "$config")
	[ -n "$rep_node" ] && args+=(--node "$rep_node")
	[ -n "$run_dir" ] && args+=(--run-dir "$run_dir")
	"$repadm" "${args[@]}" --json cstate "$res" 2>/dev/null
}

json_field() {
	local re="\"$1\":\"([A-Za-z]*)\""
	[[ $2 =~ $re ]] && echo "${BASH_REMATCH[1]}"
}

# Sets disk, peer_disk, cstate from repadm; fails when the resource is not up here.
read_rep_state() {
	local out
	out=$(repadm_state) || return 1
	disk=$(json_field disk "$out")
	peer_disk=$(json_field peer_disk "$out")
	cstate=$(json_field cstate "$out")
	[ -n "$disk" ] && [ -n "$cstate" ]
}

connected() {
	case $cstate in
	Connected | StartingSync* | WFBitMap* | WFSyncUUID | SyncSource | SyncTarget | Verify* | PausedSync* | Ahead | Behind) return 0 ;;
	*) return 1 ;;
	esac
}

# The CIB from the DC (not the local copy, which may be stale after a partition), retried
# until the timeout: right after a node loss a DC election may still be running.
query_cib() {
	local deadline=$((SECONDS + timeout)) out
	while :; do
		if out=$(cibadmin -Q -t 2 "$@" 2>&1); then
			printf '%s\n' "$out"
			return 0
		fi
		# "No such device or address": an xpath query that matched nothing.
		case $out in *"No such device"*) return 2 ;; esac
		if [ $SECONDS -ge $deadline ]; then
			say "cannot query the CIB: $out"
			return 1
		fi
		sleep 1
	done
}

find_clone_id() {
	[ -n "$clone_id" ] && return 0
	local xpath="//clone[primitive[@class='ocf' and @provider='rep' and @type='rep']/instance_attributes/nvpair[@name='resource' and @value='$res']]"
	local out
	out=$(query_cib --xpath "$xpath" --node-path) || {
		say "no promotable clone of an ocf:rep:rep primitive with resource=$res in the CIB; pass --clone-id"
		return 1
	}
	clone_id=$(printf '%s\n' "$out" | sed -n "s/^.*clone\[@id='\([^']*\)'\].*$/\1/p" | head -n 1)
	[ -n "$clone_id" ] || { say "cannot read the clone id from: $out"; return 1; }
}

# The value of the #uname expression of the existing constraint (empty when there is none).
existing_owner() {
	local out rc
	out=$(query_cib -o constraints --xpath "//rsc_location[@id='$cid']")
	rc=$?
	[ $rc -eq 2 ] && return 0
	[ $rc -ne 0 ] && return 1
	printf '%s\n' "$out" | sed -n 's/^.*<expression .*value="\([^"]*\)".*$/\1/p' | head -n 1
}

peer_membership() {
	[ -n "$peer" ] || { echo unknown; return; }
	local line
	line=$(crm_node -l 2>/dev/null | awk -v p="$peer" '$2 == p { print $3; exit }')
	echo "${line:-unknown}"
}

peer_was_stonithed() {
	[ -n "$peer" ] && stonith_admin --history "$peer" 2>/dev/null | grep -q "successful"
}

place_constraint() {
	local xml="<rsc_location rsc=\"$clone_id\" id=\"$cid\"><rule role=\"$role\" score=\"-INFINITY\" id=\"$id_prefix-rule-$clone_id\"><expression attribute=\"#uname\" operation=\"ne\" value=\"$me\" id=\"$id_prefix-expr-$clone_id\"/></rule></rsc_location>"
	local out
	if ! out=$(cibadmin -C -o constraints -X "$xml" 2>&1); then
		say "could not place constraint '$cid': $out"
		return 1
	fi
	say "placed constraint '$cid': $role of $clone_id only on $me"
}

do_fence() {
	local owner membership
	owner=$(existing_owner) || exit 1
	if [ "$owner" = "$me" ]; then
		say "suitable constraint already placed: '$cid'"
		exit 4
	elif [ -n "$owner" ]; then
		say "constraint '$cid' already exists for $owner: this node is the fenced one; not fencing $peer"
		exit 1
	fi
	if ! read_rep_state; then
		say "could not determine this node's disk state for $res: did not place the constraint"
		exit 1
	fi
	if connected && [ "$peer_disk" = UpToDate ]; then
		say "the peer's disk is UpToDate and connected: nothing to fence, did not place the constraint"
		exit 1
	fi
	membership=$(peer_membership)
	case $disk in UpToDate | Consistent) ;; *)
		say "this node's disk is $disk: it has no data to protect; did not place the constraint"
		exit 5
		;;
	esac
	if [ "$peer_disk" = Inconsistent ]; then
		place_constraint || exit 1
		exit 3
	fi
	if [ "$membership" = member ]; then
		place_constraint || exit 1
		exit 4
	fi
	if [ "$disk" != UpToDate ]; then
		say "peer $peer is $membership and this node is only $disk: did not place the constraint"
		exit 5
	fi
	place_constraint || exit 1
	if peer_was_stonithed; then
		say "peer $peer was STONITHed"
		exit 7
	fi
	say "peer ${peer:-(unknown)} is $membership (not a cluster member): assumed dead"
	exit 5
}

do_unfence() {
	local owner deadline=$((SECONDS + timeout)) out
	owner=$(existing_owner) || exit 1
	if [ -z "$owner" ]; then
		say "no constraint '$cid' in place, nothing to do"
		exit 0
	fi
	while :; do
		if read_rep_state && connected && [ "$disk" = UpToDate ] && [ "$peer_disk" = UpToDate ]; then
			break
		fi
		if [ $SECONDS -ge $deadline ]; then
			say "disks are ${disk:-unknown}/${peer_disk:-unknown} (${cstate:-not up}), not both UpToDate: leaving constraint '$cid' in place"
			exit 1
		fi
		sleep 0.5
	done
	if ! out=$(cibadmin -D -X "<rsc_location id=\"$cid\" rsc=\"$clone_id\"/>" 2>&1); then
		say "could not remove constraint '$cid': $out"
		exit 1
	fi
	say "removed constraint '$cid' (was placed for $owner)"
	exit 0
}

if [ -z "$me" ]; then
	me=$(crm_node -n 2>/dev/null) || { say "cannot ask the cluster for this node's name (crm_node -n); is Pacemaker running?"; exit 1; }
fi
find_clone_id || exit 1
cid="$id_prefix-$clone_id"
say "resource $res, clone $clone_id, this node $me, peer ${peer:-(unknown)}"
case $mode in
fence) do_fence ;;
unfence) do_unfence ;;
esac

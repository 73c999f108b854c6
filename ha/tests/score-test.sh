#!/bin/bash
# The agent's functions read OCF_RESKEY_* and set rep_* variables: shellcheck cannot see that.
# shellcheck disable=SC2034,SC2154
# The promotion-score policy of the OCF agent (rep_score_for in ha/ocf/rep), case by case:
# each line is a state as `repadm --json cstate` reports it, the fencing policy, and the score
# Pacemaker must see. The states include those rep cannot produce yet (Outdated from a peer's
# fence-peer handler, Consistent after an attach with fencing) so that the policy is already
# right when fencing lands. Then the same policy through the agent's real parsing: status
# JSON lines fed to rep_status by a stand-in repadm.
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
REP_OCF_SOURCE_ONLY=1 . "$here/../ocf/rep"

fails=0
passes=0
check() {
	local want=$1 got=$2 what=$3
	if [ "$got" = "$want" ]; then
		passes=$((passes + 1))
	else
		echo "FAIL: $what: score $got, expected $want" >&2
		fails=$((fails + 1))
	fi
}

# role disk peer_disk cstate fencing -> score (default adjust_master_score "0 10 1000 10000")
while read -r role disk pdsk cstate fencing want; do
	case $role in '' | '#'*) continue ;; esac
	got=$(rep_score_for "$role" "$disk" "$pdsk" "$cstate" "$fencing")
	check "$want" "$got" "$role $disk/$pdsk $cstate fencing=$fencing"
done <<'EOF'
# The Primary with good data keeps the highest score, connected or not, fenced or not.
Primary   UpToDate     UpToDate     Connected    dont-care     10000
Primary   UpToDate     DUnknown     WFConnection dont-care     10000
Primary   UpToDate     DUnknown     StandAlone   resource-only 10000
Primary   UpToDate     Inconsistent SyncSource   resource-only 10000
# A Primary serving through its peer (its own disk failed or resyncing) is a poor choice.
Primary   Diskless     UpToDate     Connected    dont-care     10
Primary   Inconsistent UpToDate     SyncTarget   dont-care     10
Primary   Diskless     DUnknown     WFConnection dont-care     0
# A connected UpToDate Secondary is as good as the Primary.
Secondary UpToDate     UpToDate     Connected    dont-care     10000
Secondary UpToDate     UpToDate     Connected    resource-only 10000
Secondary UpToDate     Inconsistent SyncSource   dont-care     10000
Secondary UpToDate     Outdated     WFConnection resource-only 10000
# Disconnected from a peer in an unknown state: promotable (the Primary's crash is the
# failover case); with fencing, promote runs fence-peer first.
Secondary UpToDate     DUnknown     WFConnection dont-care     1000
Secondary UpToDate     DUnknown     WFConnection resource-only 1000
Secondary UpToDate     DUnknown     Unconnected  resource-and-stonith 1000
# Never: Outdated, Inconsistent without an UpToDate peer, StandAlone (split brain).
Secondary Outdated     DUnknown     WFConnection dont-care     0
Secondary Outdated     DUnknown     WFConnection resource-only 0
Secondary Outdated     UpToDate     WFConnection resource-and-stonith 0
Secondary Inconsistent DUnknown     WFConnection dont-care     0
Secondary Inconsistent Inconsistent Connected    dont-care     0
Secondary UpToDate     DUnknown     StandAlone   dont-care     0
Secondary UpToDate     DUnknown     StandAlone   resource-only 0
Secondary Outdated     DUnknown     StandAlone   dont-care     0
# Consistent (attached without peer contact): none with fencing; only_consistent without.
Secondary Consistent   DUnknown     WFConnection resource-only 0
Secondary Consistent   DUnknown     WFConnection resource-and-stonith 0
Secondary Consistent   DUnknown     WFConnection dont-care     0
# Access to good data through the connected peer only.
Secondary Inconsistent UpToDate     SyncTarget   dont-care     10
Secondary Inconsistent UpToDate     PausedSyncT  resource-only 10
Secondary Diskless     UpToDate     Connected    dont-care     10
Secondary Diskless     DUnknown     WFConnection dont-care     0
# Transitional disk states keep the previous score.
Secondary Negotiating  UpToDate     Connected    dont-care     keep
Secondary Attaching    DUnknown     WFConnection dont-care     keep
Primary   Failed       UpToDate     Connected    dont-care     keep
EOF

# adjust_master_score: the operator's values are used where the policy allows a score, never
# where it forbids one.
check 5 "$(rep_score_for Secondary Consistent DUnknown WFConnection dont-care "5 20 2000 20000")" "only_consistent 5 without fencing"
check 0 "$(rep_score_for Secondary Consistent DUnknown WFConnection resource-only "5 20 2000 20000")" "only_consistent ignored with fencing"
check 2000 "$(rep_score_for Secondary UpToDate DUnknown WFConnection dont-care "5 20 2000 20000")" "local_ok 2000"
check 20000 "$(rep_score_for Primary UpToDate UpToDate Connected dont-care "5 20 2000 20000")" "as_good_as_it_gets 20000"
check 0 "$(rep_score_for Secondary Outdated DUnknown WFConnection dont-care "5 20 2000 20000")" "Outdated ignores adjust_master_score"

# Through the agent's parsing: a stand-in repadm prints what `repadm --json cstate` and
# `repadm dump` print, and the agent's rep_status + rep_score_for must agree with the table.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/repadm" <<'EOF'
#!/bin/sh
# Stand-in for repadm's output formats only; the live tests run the real one.
for a in "$@"; do
	case $a in
	cstate) cat "$FAKE_STATE"; exit 0 ;;
	dump) printf 'resource r0 {\n    disk {\n        fencing          %s;\n    }\n}\n' "$FAKE_FENCING"; exit 0 ;;
	esac
done
exit 1
EOF
chmod +x "$tmp/repadm"
OCF_RESKEY_resource=r0
OCF_RESKEY_repadm=$tmp/repadm
export FAKE_STATE=$tmp/state FAKE_FENCING
while read -r fencing want expect_rc json; do
	case $fencing in '' | '#'*) continue ;; esac
	FAKE_FENCING=$fencing
	printf '%s\n' "$json" >"$FAKE_STATE"
	rep_status 2>/dev/null
	rc=$?
	check "$expect_rc" "$rc" "rep_status exit code for $json"
	if [ "$want" != - ]; then
		got=$(rep_score_now)
		check "$want" "$got" "parsed $json fencing=$fencing"
	fi
done <<'EOF'
dont-care     10000 8 {"cstate":"Connected","disk":"UpToDate","peer_disk":"UpToDate","peer_role":"Secondary","resource":"r0","role":"Primary"}
dont-care     10000 0 {"cstate":"Connected","disk":"UpToDate","peer_disk":"UpToDate","peer_role":"Primary","resource":"r0","role":"Secondary"}
resource-only 1000  0 {"cstate":"WFConnection","disk":"UpToDate","peer_disk":"DUnknown","peer_role":"Unknown","resource":"r0","role":"Secondary"}
resource-only 0     0 {"cstate":"WFConnection","disk":"Consistent","peer_disk":"DUnknown","peer_role":"Unknown","resource":"r0","role":"Secondary"}
dont-care     0     0 {"cstate":"WFConnection","disk":"Outdated","peer_disk":"DUnknown","peer_role":"Unknown","resource":"r0","role":"Secondary"}
dont-care     0     0 {"cstate":"StandAlone","disk":"UpToDate","peer_disk":"DUnknown","peer_role":"Unknown","resource":"r0","role":"Secondary"}
dont-care     0     9 {"cstate":"WFConnection","disk":"Diskless","peer_disk":"DUnknown","peer_role":"Unknown","resource":"r0","role":"Primary"}
dont-care     10    8 {"cstate":"Connected","disk":"Diskless","peer_disk":"UpToDate","peer_role":"Secondary","resource":"r0","role":"Primary"}
dont-care     -     7 Unconfigured
# Quorum (docs/quorum.md): without it, no score, Primary or not; with it, or off, as above.
dont-care     10000 0 {"cstate":"Connected","disk":"UpToDate","peer_disk":"UpToDate","peer_role":"Primary","resource":"r0","role":"Secondary","quorum_enabled":true,"quorum":true}
dont-care     0     0 {"cstate":"WFConnection","disk":"UpToDate","peer_disk":"DUnknown","peer_role":"Unknown","resource":"r0","role":"Secondary","quorum_enabled":true,"quorum":false}
dont-care     0     8 {"cstate":"WFConnection","disk":"UpToDate","peer_disk":"DUnknown","peer_role":"Unknown","resource":"r0","role":"Primary","quorum_enabled":true,"quorum":false}
dont-care     1000  0 {"cstate":"WFConnection","disk":"UpToDate","peer_disk":"DUnknown","peer_role":"Unknown","resource":"r0","role":"Secondary","quorum_enabled":false,"quorum":true}
EOF

echo "score-test: $passes passed, $fails failed"
[ "$fails" -eq 0 ]

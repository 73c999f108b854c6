#!/usr/bin/env bash
# The DRBD part of the MooseFS master HA runbook (shared seeds 003/004: "基于MFS高可用的分布式
# 存储架构" and the ucarp failover howto), replayed with repadm on two local nodes:
# node-a (127.0.0.1, the seed's Master62) and node-b (127.0.0.2, the seed's Slave63).
# docs/from-drbdadm.md walks through the same steps; tests/tests/runbook.rs runs this script
# in the suite, so the guide cannot rot.
#
# Every step prints the seed's drbdadm command and the repadm command run in its place.
# /dev/sdb1 is a 64 MiB file per node, /dev/drbd0 is the resource's NBD export made a block
# device with nbdfuse + a loop device, and /var/lib/mfs is a directory per node. mfsmaster
# itself is played by files written to /var/lib/mfs (metadata.mfs, changelog.0.mfs).
#
# Needs root (FUSE, loop devices, mount), nbdfuse (libnbd-bin), mkfs.ext4 (e2fsprogs).
# Environment: REPADM (default target/release/repadm; repd is taken from beside it or from
# REP_REPD), RUNBOOK_DIR (default a fresh /tmp/rep-runbook.XXXXXX), RUNBOOK_PORT (7789),
# RUNBOOK_KEEP=1 keeps the directory. Exit 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
repadm=$(realpath "${REPADM:-target/release/repadm}")
[ -x "$repadm" ] || { echo "runbook: $repadm not built (cargo build --release --workspace)" >&2; exit 1; }
for t in nbdfuse losetup mkfs.ext4 mount python3; do
  command -v "$t" >/dev/null || { echo "runbook: needs $t (scripts/deps.sh installs it)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "runbook: must run as root (FUSE, loop devices, mount)" >&2; exit 1; }
dir=${RUNBOOK_DIR:-$(mktemp -d /tmp/rep-runbook.XXXXXX)}
mkdir -p "$dir"
dir=$(realpath "$dir")
port=${RUNBOOK_PORT:-7789}
res=mfs_meta0
conf=$dir/mfs-meta.res

on() { local node=$1; shift; REP_NODE=$node REP_RUN_DIR=$dir/run-$node REP_CONFIG=$conf "$repadm" "$@"; }
step() { printf '\n== %s\n' "$*"; }
# drbd NODE "drbdadm words" repadm-args...: show both commands, run the repadm one.
drbd() {
  local node=$1 seed=$2; shift 2
  printf '   [%s] drbdadm %-36s -> repadm %s\n' "$node" "$seed" "$*"
  on "$node" "$@"
}
die() { echo "runbook: FAILED: $*" >&2; exit 1; }
# until SECONDS WHAT CMD...: retry CMD every 0.2 s until it succeeds.
until_ok() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "timed out after ${secs} s waiting for $what"
    sleep 0.2
  done
}
is() { [ "$(on "$1" "$2" $res)" = "$3" ]; }
expect() { local got; got=$(on "$1" "$2" $res); [ "$got" = "$3" ] || die "$1: $2 is $got, expected $3"; echo "   [$1] $2: $got"; }

declare -A nbdfuse_pid loopdev
mount_drbd0() { # NODE: /dev/drbd0 -> /var/lib/mfs of NODE
  local n=$1 d=$dir/$1
  mkdir -p "$d/fuse" "$d/var-lib-mfs"
  nbdfuse "$d/fuse/drbd0" --unix "$dir/run-$n/$res.nbd" &
  nbdfuse_pid[$n]=$!
  until_ok 20 "nbdfuse on $n" test -s "$d/fuse/drbd0"
  loopdev[$n]=$(losetup -f --show "$d/fuse/drbd0")
  echo "   [$n] /dev/drbd0 is nbdfuse $d/fuse/drbd0 on ${loopdev[$n]}"
}
umount_drbd0() { # NODE: unmount and let go of the export (the device is no longer open)
  local n=$1 d=$dir/$1
  mountpoint -q "$d/var-lib-mfs" && umount "$d/var-lib-mfs"
  if [ -n "${loopdev[$n]:-}" ]; then losetup -d "${loopdev[$n]}"; loopdev[$n]=; fi
  mountpoint -q "$d/fuse" && umount "$d/fuse"
  if [ -n "${nbdfuse_pid[$n]:-}" ]; then wait "${nbdfuse_pid[$n]}" 2>/dev/null || true; nbdfuse_pid[$n]=; fi
  return 0
}
cleanup() {
  local rc=$?
  set +e
  for n in node-a node-b; do
    umount -l "$dir/$n/var-lib-mfs" 2>/dev/null
    [ -n "${loopdev[$n]:-}" ] && losetup -d "${loopdev[$n]}" 2>/dev/null
    umount -l "$dir/$n/fuse" 2>/dev/null
    [ -n "${nbdfuse_pid[$n]:-}" ] && kill "${nbdfuse_pid[$n]}" 2>/dev/null
    if [ -S "$dir/run-$n/$res.ctl" ]; then
      on $n secondary $res >/dev/null 2>&1
      on $n down $res >/dev/null 2>&1
    fi
    pid=$(cat "$dir/run-$n/$res.pid" 2>/dev/null) && kill -9 "$pid" 2>/dev/null
  done
  if [ $rc -ne 0 ]; then
    for n in node-a node-b; do echo "--- $n log:"; tail -n 15 "$dir/run-$n/$res.log" 2>/dev/null; done
  fi
  [ "${RUNBOOK_KEEP:-0}" = 1 ] || rm -rf "$dir"
  exit $rc
}
trap cleanup EXIT

step "Phase 2: the resource file /etc/drbd.d/mfs-meta.res (the seed's, with local disks and addresses)"
truncate -s 64M "$dir/a-sdb1.img" "$dir/b-sdb1.img"
cat >"$conf" <<EOF
resource $res {
	protocol C;
	startup { wfc-timeout 0; degr-wfc-timeout 120; }
	disk { on-io-error detach; }
	net {
		timeout 60;
		connect-int 10;
		ping-int 10;
		max-buffers 2048;
		max-epoch-size 2048;
	}
	meta-disk internal;
	device    /dev/drbd0;
	syncer {
		verify-alg sha1;
	}
	on node-a {
		disk $dir/a-sdb1.img;
		address 127.0.0.1:$port;
	}
	on node-b {
		disk $dir/b-sdb1.img;
		address 127.0.0.2:$port;
	}
 }
EOF
sed 's/^/   | /' "$conf"
on node-a dump $res >/dev/null || die "repadm rejects the seed's resource file"

step "Initialise DRBD on master and slave: create-md, up, cat /proc/drbd (Secondary/Secondary)"
drbd node-a "create-md $res" create-md $res
drbd node-b "create-md $res" create-md $res
drbd node-a "up $res" up $res
drbd node-b "up $res" up $res
until_ok 30 "both nodes Connected" is node-a cstate Connected
until_ok 10 "node-b Connected" is node-b cstate Connected
echo "   [node-a] cat /proc/drbd -> cat $dir/run-node-a/status"
sed 's/^/   | /' "$dir/run-node-a/status"
grep -q "cs:Connected ro:Secondary/Secondary ds:Inconsistent/Inconsistent" "$dir/run-node-a/status" \
  || die "expected Secondary/Secondary Inconsistent/Inconsistent in /proc/drbd's layout"

step "Make Master62 (node-a) primary: the initial full sync"
drbd node-a "primary $res --force" primary $res --force
echo "   [node-b] cat /proc/drbd (during the sync) -> repadm status --proc"
on node-b status --proc $res | sed 's/^/   | /'
drbd node-b "(watch cat /proc/drbd)" wait-sync --timeout 120 $res
expect node-a role Primary/Secondary
expect node-a dstate UpToDate/UpToDate

step "Format on the Primary only: mkfs.xfs -b 4096 /dev/drbd0 (ext4 here: e2fsprogs is installed everywhere)"
mount_drbd0 node-a
mkfs.ext4 -q -F -b 4096 "${loopdev[node-a]}"

step "Phase 3: mount /dev/drbd0 /var/lib/mfs on the Primary and start mfsmaster"
mount "${loopdev[node-a]}" "$dir/node-a/var-lib-mfs"
echo "metadata of MooseFS, written by mfsmaster on Master62" >"$dir/node-a/var-lib-mfs/metadata.mfs"
printf '1: CREATE(/data)\n2: WRITE(/data/chunk1)\n' >"$dir/node-a/var-lib-mfs/changelog.0.mfs"
sync
expect node-a role Primary/Secondary

step "Failover by hand (the keepalived notify scripts' order): master stops, slave takes over"
echo "   [node-a] systemctl stop moosefs-master; umount /var/lib/mfs"
umount_drbd0 node-a
drbd node-a "secondary $res" secondary $res
drbd node-b "primary $res" primary $res
mount_drbd0 node-b
mount "${loopdev[node-b]}" "$dir/node-b/var-lib-mfs"
echo "   [node-b] mount /dev/drbd0 /var/lib/mfs; systemctl start moosefs-master"
grep -q "written by mfsmaster on Master62" "$dir/node-b/var-lib-mfs/metadata.mfs" \
  || die "the metadata did not survive the failover"
echo "3: WRITE(/data/chunk2) on Slave63" >>"$dir/node-b/var-lib-mfs/changelog.0.mfs"
sync
expect node-b role Primary/Secondary
expect node-b dstate UpToDate/UpToDate

step "Split brain (问题四, case 5): both sides StandAlone, both promoted and written to"
drbd node-a "disconnect $res" disconnect $res
drbd node-b "disconnect $res" disconnect $res
expect node-b cstate StandAlone
expect node-b role Primary/Unknown
expect node-a role Secondary/Unknown
echo "   (keepalived moved the VIP back while the link was down: Master62 is promoted too)"
drbd node-a "primary $res" primary $res
mount_drbd0 node-a
mount "${loopdev[node-a]}" "$dir/node-a/var-lib-mfs"
echo "written on Master62 during the split" >"$dir/node-a/var-lib-mfs/a-during-split"
sync
umount_drbd0 node-a
echo "written on Slave63 during the split" >"$dir/node-b/var-lib-mfs/b-during-split"
sync
echo "   (the network is back)"
drbd node-b "connect $res" connect $res
drbd node-a "connect $res" connect $res
until_ok 30 "the split brain to be detected (both StandAlone)" \
  grep -q "Split-Brain detected" "$dir/run-node-a/$res.log" "$dir/run-node-b/$res.log"
until_ok 30 "node-a StandAlone" is node-a cstate StandAlone
until_ok 30 "node-b StandAlone" is node-b cstate StandAlone
expect node-a role Primary/Unknown
expect node-b role Primary/Unknown

step "Recovery: on the standby (node-a) discard its changes, on the primary (node-b) connect"
drbd node-a "disconnect $res" disconnect $res
drbd node-a "secondary $res" secondary $res
drbd node-a "connect --discard-my-data $res" connect --discard-my-data $res
drbd node-b "connect $res" connect $res
until_ok 60 "node-a Connected and UpToDate" is node-a dstate UpToDate/UpToDate
until_ok 30 "node-a Connected" is node-a cstate Connected
expect node-a role Secondary/Primary
expect node-b role Primary/Secondary
expect node-b dstate UpToDate/UpToDate

step "Check: Slave63's data won, the two disks are identical"
[ -e "$dir/node-b/var-lib-mfs/b-during-split" ] || die "node-b lost its own write"
[ ! -e "$dir/node-b/var-lib-mfs/a-during-split" ] || die "node-a's discarded write appeared on node-b"
grep -q "WRITE(/data/chunk2) on Slave63" "$dir/node-b/var-lib-mfs/changelog.0.mfs" || die "changelog"
drbd node-b "verify $res" verify --wait --timeout 120 $res
oos=$(on node-b status --json $res | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["verify_oos_blocks"])')
[ "$oos" = 0 ] || die "verify found $oos blocks out of sync"

step "Shutdown order (问题三): client, chunk, metalogger, master: umount, secondary, down"
umount_drbd0 node-b
drbd node-b "secondary $res" secondary $res
drbd node-a "down $res" down $res
drbd node-b "down $res" down $res
echo
echo "runbook: every step passed"

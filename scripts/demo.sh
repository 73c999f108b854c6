#!/usr/bin/env bash
# demo.sh — build rep and run the DRBD failover runbook on two nodes of one machine:
# node-a (127.0.0.1:7789) and node-b (127.0.0.2:7789), each with its own run dir and backing
# file. create-md and up on both, initial full sync with progress, ext4 on node-a's NBD export
# (nbdfuse + loop device), write files, kill node-a's daemon (a crash), promote node-b, mount its
# export and show the files; then node-a comes back and resyncs from node-b.
# Needs root (mount, losetup, FUSE). Everything lives under /tmp/rep-demo and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
echo "== building (release)"
cargo build --release --bins -q
BIN=$PWD/target/release
D=/tmp/rep-demo
export REP_CONFIG=$D/rep.res REP_REPD=$BIN/repd
on() { local node=$1; shift; echo "+ [$node] repadm $*" >&2; REP_NODE=$node REP_RUN_DIR=$D/run-$node "$BIN/repadm" "$@"; }

NBDFUSE_PID=""
LOOP=""
detach() {
  set +e
  umount "$D/mnt" 2>/dev/null
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
  LOOP=""
  umount "$D/fuse" 2>/dev/null
  [ -n "$NBDFUSE_PID" ] && wait "$NBDFUSE_PID" 2>/dev/null
  NBDFUSE_PID=""
  set -e
}
cleanup() {
  set +e
  detach
  for n in node-a node-b; do on $n down r0 >/dev/null 2>&1; done
  rm -rf "$D"
}
trap cleanup EXIT
rm -rf "$D"; mkdir -p "$D/fuse" "$D/mnt"
truncate -s 256M "$D/a.img" "$D/b.img"
cat > "$REP_CONFIG" <<RES
resource r0 {
  protocol C;
  device /dev/drbd0;
  meta-disk internal;
  net { connect-int 1; ping-int 1; }
  disk { c-plan-ahead 0; resync-rate 64M; }
  on node-a { disk $D/a.img; address 127.0.0.1:7789; }
  on node-b { disk $D/b.img; address 127.0.0.2:7789; }
}
RES
echo "== the resource file, as repadm (and drbdadm) normalize it"
on node-a dump r0
for n in node-a node-b; do on $n create-md r0; on $n up r0; done
on node-a wait-connect --timeout 20 r0
on node-a status r0

echo "== initial full sync: node-a becomes Primary and SyncSource"
on node-a primary --force r0
for _ in $(seq 100); do
  on node-a status --proc r0 2>/dev/null | sed -n '3,5p'
  [ "$(on node-b dstate r0 2>/dev/null)" = "UpToDate/UpToDate" ] && break
  sleep 0.5
done
on node-a status r0

attach() {
  nbdfuse "$D/fuse/disk" --unix "$1" &
  NBDFUSE_PID=$!
  for _ in $(seq 100); do [ -s "$D/fuse/disk" ] && break; sleep 0.1; done
  LOOP=$(losetup -f --show "$D/fuse/disk")
}

echo "== ext4 on node-a's NBD export; every write is on both disks (protocol C)"
attach "$D/run-node-a/r0.nbd"
mkfs.ext4 -q -F "$LOOP"
mount "$LOOP" "$D/mnt"
for i in 1 2 3; do head -c 8M /dev/urandom > "$D/mnt/file$i"; done
echo "hello from node-a" > "$D/mnt/hello.txt"
sync
(cd "$D/mnt" && sha256sum file1 file2 file3 hello.txt) | tee "$D/sums"

echo "== node-a crashes (kill -9 of its daemon)"
kill -9 "$(cat "$D/run-node-a/r0.pid")"
detach
sleep 1
on node-b status r0

echo "== failover: promote node-b and mount its export"
on node-b primary r0
attach "$D/run-node-b/r0.nbd"
mount "$LOOP" "$D/mnt"          # replays the ext4 journal, as after any crash
(cd "$D/mnt" && sha256sum -c "$D/sums")
cat "$D/mnt/hello.txt"
echo "written on node-b after the failover" > "$D/mnt/after.txt"
sync

echo "== node-a comes back as Secondary and resyncs what it missed from node-b"
on node-a up r0
for _ in $(seq 60); do
  [ "$(on node-a dstate r0 2>/dev/null)" = "UpToDate/UpToDate" ] && break
  sleep 0.5
done
on node-b status r0
on node-a get-gi r0
on node-b get-gi r0
detach
echo "== done"

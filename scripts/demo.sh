#!/usr/bin/env bash
# demo.sh — build rep and walk through the DRBD runbook on one node of a two-node resource:
# create-md, up, primary --force, ext4 on the NBD export (nbdfuse + loop device), write files,
# down/up/primary, mount again and show the files survived, tear down.
# (Replication to node-b at 127.0.0.2 arrives with the two-node issue; until then node-a sits in
# WFConnection exactly as DRBD does while its peer is unreachable.)
# Needs root (mount, losetup, FUSE). Everything lives under /tmp/rep-demo and is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
echo "== building (release)"
cargo build --release --bins -q
BIN=$PWD/target/release
D=/tmp/rep-demo
export REP_CONFIG=$D/rep.res REP_RUN_DIR=$D/run-a REP_NODE=node-a REP_REPD=$BIN/repd
repadm() { echo "+ repadm $*" >&2; "$BIN/repadm" "$@"; }

NBDFUSE_PID=""
LOOP=""
cleanup() {
  set +e
  umount "$D/mnt" 2>/dev/null
  [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
  umount "$D/fuse" 2>/dev/null
  [ -n "$NBDFUSE_PID" ] && wait "$NBDFUSE_PID" 2>/dev/null
  "$BIN/repadm" down r0 >/dev/null 2>&1
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
  on node-a { disk $D/a.img; address 127.0.0.1:7789; }
  on node-b { disk $D/b.img; address 127.0.0.2:7789; }
}
RES
echo "== the resource file, as repadm (and drbdadm) normalize it"
repadm dump r0
repadm create-md r0
repadm up r0
repadm status r0
repadm primary --force r0
cat "$REP_RUN_DIR/status"

attach() {
  nbdfuse "$D/fuse/disk" --unix "$REP_RUN_DIR/r0.nbd" &
  NBDFUSE_PID=$!
  for _ in $(seq 100); do [ -s "$D/fuse/disk" ] && break; sleep 0.1; done
  LOOP=$(losetup -f --show "$D/fuse/disk")
}
detach() {
  umount "$D/mnt"; losetup -d "$LOOP"; LOOP=""; umount "$D/fuse"; wait "$NBDFUSE_PID"; NBDFUSE_PID=""
}

echo "== ext4 on the NBD export"
attach
mkfs.ext4 -q -F "$LOOP"
mount "$LOOP" "$D/mnt"
for i in 1 2 3; do head -c 4M /dev/urandom > "$D/mnt/file$i"; done
echo "hello from rep" > "$D/mnt/hello.txt"
sync
(cd "$D/mnt" && sha256sum file1 file2 file3 hello.txt) | tee "$D/sums"
repadm status --proc r0
detach

echo "== down, up, primary: the data survives"
repadm secondary r0
repadm down r0
repadm up r0
repadm primary r0
attach
mount "$LOOP" "$D/mnt"
(cd "$D/mnt" && sha256sum -c "$D/sums")
cat "$D/mnt/hello.txt"
detach
repadm get-gi r0
repadm secondary r0
repadm down r0
echo "== demo finished OK"

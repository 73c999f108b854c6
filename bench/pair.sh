# pair.sh — sourced by bench scripts: rep's pair brought up the way ../shared/tools/perf-ratio.sh
# does it (node-a 127.0.0.1 Primary, node-b 127.0.0.2, connect-int 1, the initial sync skipped
# with new-current-uuid --clear-bitmap). The caller defines adm() and T, D, PORT, and has written
# $D/disk-a and $D/disk-b in full.
pair_up() { # PROTOCOL STANDALONE(0/1)
  cat > "$T/r0.res" <<RES
resource r0 { protocol $1; device /dev/drbd0; meta-disk internal;
  net { connect-int 1; }
  on node-a { disk $D/disk-a; address 127.0.0.1:$PORT; }
  on node-b { disk $D/disk-b; address 127.0.0.2:$PORT; } }
RES
  for n in node-a node-b; do adm $n create-md r0 >/dev/null 2>&1; adm $n up r0 >/dev/null 2>&1; done
  for i in $(seq 150); do adm node-a cstate r0 2>/dev/null | grep -q ^Connected && break; sleep 0.2; done
  adm node-a new-current-uuid --clear-bitmap r0 >/dev/null 2>&1; adm node-a primary r0 >/dev/null 2>&1
  if [ "$2" = 1 ]; then adm node-a disconnect r0 >/dev/null 2>&1; fi
  return 0
}

#!/usr/bin/env bash
# tls-cost.sh — what TLS costs, measured with perf-ratio.sh's method (../shared/tools/perf-ratio.sh):
# backing files on /dev/shm written in full first, fio's nbd engine, CPU per I/O of the daemons from
# /proc/PID/stat, and every configuration ALTERNATED within each of ROUNDS rounds, medians at the end.
#
# Configurations (a protocol C pair on 127.0.0.1/127.0.0.2 each time):
#   link-plain  plaintext replication link, client over the Unix socket     (perf-ratio's rep-C)
#   link-tls    net { tls yes; } on the link, client over the Unix socket
#   nbd-tcp     plaintext link, client over TCP (nbd-listen)
#   nbd-tls     plaintext link, client over TCP with nbd-tls require (fio's URI is nbds://…)
# Jobs: w32 (4k randwrite QD32), w1 (4k randwrite QD1), s8 (1M seq write QD8), and `sync`: a
# full sync of SIZE_MIB from a forced Primary to an Inconsistent peer, plain and with link TLS.
# Prints every round, the medians, and the ratios TLS / plaintext.
#   ROUNDS=3 RT=8 SIZE_MIB=1100 bench/tls-cost.sh [JOBS...]      (from the project root, after
#   cargo build --release; needs fio, openssl, python3)
# Network: 127.0.0.1 and 127.0.0.2 only; every load bounded by fio's runtime or SIZE_MIB.
set -u
REPADM=${REPADM:-$PWD/target/release/repadm}
[ -x "$REPADM" ] || { echo "no $REPADM: build first (cargo build --release)"; exit 2; }
for t in fio openssl python3; do command -v $t >/dev/null || { echo "missing $t (bash scripts/deps.sh)"; exit 2; }; done
ROUNDS=${ROUNDS:-3}; RT=${RT:-8}; SIZE_MIB=${SIZE_MIB:-1100}
JOBS=${*:-w32 w1 s8 sync}
T=$(mktemp -d /tmp/tlscost.XXXXXX); D=/dev/shm/$(basename "$T"); mkdir -p "$D" "$T/run-node-a" "$T/run-node-b" "$T/pki"
PORT=$((19900 + RANDOM % 400)); NBDPORT=$((PORT + 2))
cleanup() { for n in node-a node-b; do adm $n down r0 >/dev/null 2>&1; done
  for p in $(pgrep -f "$T/r0.res" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done; rm -rf "$T" "$D"; }
trap cleanup EXIT
adm() { local n=$1; shift; REP_RUN_DIR=$T/run-$n timeout 120 "$REPADM" -c "$T/r0.res" --node "$n" "$@"; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }

# One CA; leaves for both nodes (link) and for the server address and a client (NBD). libnbd reads
# ca-cert.pem, client-cert.pem and client-key.pem from the tls-certificates directory.
pki() { local P=$T/pki
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $P/ca-key.pem 2>/dev/null
  openssl req -x509 -new -days 2 -subj /CN=bench-ca -key $P/ca-key.pem -out $P/ca-cert.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  local leaf
  for leaf in node-a:DNS:node-a node-b:DNS:node-b server:IP:127.0.0.1 client:DNS:client; do
    local cn=${leaf%%:*} san=${leaf#*:}
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $P/$cn-key.pem 2>/dev/null
    openssl req -new -subj /CN=$cn -key $P/$cn-key.pem -out $P/$cn.csr 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$san" > $P/$cn.ext
    openssl x509 -req -days 2 -in $P/$cn.csr -CA $P/ca-cert.pem -CAkey $P/ca-key.pem -CAcreateserial \
      -extfile $P/$cn.ext -out $P/$cn-cert.pem 2>/dev/null
  done
  chmod 600 $P/*-key.pem; chmod 644 $P/*-cert.pem; }

job_args() { case $1 in
  w32) echo "--rw=randwrite --bs=4k --iodepth=32";; w1) echo "--rw=randwrite --bs=4k --iodepth=1";;
  s8) echo "--rw=write --bs=1M --iodepth=8";; *) echo "unknown job $1" >&2; exit 2;; esac; }

fill() { head -c "${SIZE_MIB}M" /dev/zero > "$1"; }

# write_res LINK_TLS(0|1) NBD(unix|tcp|tls)
write_res() { local P=$T/pki net="connect-int 1;" a_extra="" b_extra=""
  [ "$1" = 1 ] && { net="$net tls yes; tls-ca $P/ca-cert.pem;"
    a_extra="tls-certificate $P/node-a-cert.pem; tls-privkey $P/node-a-key.pem;"
    b_extra="tls-certificate $P/node-b-cert.pem; tls-privkey $P/node-b-key.pem;"; }
  case $2 in
    tcp) a_extra="$a_extra nbd-listen 127.0.0.1:$NBDPORT;";;
    tls) a_extra="$a_extra nbd-listen 127.0.0.1:$NBDPORT; nbd-tls require; nbd-tls-certificate $P/server-cert.pem; nbd-tls-privkey $P/server-key.pem; nbd-tls-ca $P/ca-cert.pem;";;
  esac
  cat > "$T/r0.res" <<RES
resource r0 { protocol C; device /dev/drbd0; meta-disk internal;
  net { $net }
  disk { c-plan-ahead 0; resync-rate 4G; }
  on node-a { disk $D/disk-a; address 127.0.0.1:$PORT; $a_extra }
  on node-b { disk $D/disk-b; address 127.0.0.2:$PORT; $b_extra } }
RES
}

connected() { local i; for i in $(seq 300); do adm node-a cstate r0 2>/dev/null | grep -q "$1" && return 0; sleep 0.1; done; return 1; }

bring_up() { fill "$D/disk-a"; fill "$D/disk-b"
  for n in node-a node-b; do adm $n create-md r0 >/dev/null 2>&1; adm $n up r0 >/dev/null 2>&1; done
  connected ^Connected || echo "$round $label WARNING not Connected"; }

take_down() { for n in node-a node-b; do adm $n down r0 >/dev/null 2>&1; done; rm -f "$D/disk-a" "$D/disk-b"; }

io_round() { # label link_tls nbd
  label=$1; write_res "$2" "$3"; bring_up
  adm node-a new-current-uuid --clear-bitmap r0 >/dev/null 2>&1; adm node-a primary r0 >/dev/null 2>&1
  local uri pids j
  case $3 in
    unix) uri="nbd+unix:///r0?socket=$T/run-node-a/r0.nbd";;
    tcp) uri="nbd://127.0.0.1:$NBDPORT/r0";;
    # libnbd refuses a file path in a URI (tls-certificates=) unless the program allows it, and
    # fio does not; without one it reads $HOME/.pki/libnbd, or /etc/pki/libnbd for root. So fio
    # runs as nobody with HOME=$T/home for this one (nothing outside $T is touched).
    tls) uri="nbds://127.0.0.1:$NBDPORT/r0";;
  esac
  pids=$(pgrep -f "$T/r0.res" | tr '\n' ' ')
  for j in $JOBS; do
    [ "$j" = sync ] && continue
    local c0 c1; c0=$(cpu_ticks $pids)
    rm -f "$T/home/fio.json"; local as=""; [ "$3" = tls ] && as="setpriv --reuid=65534 --regid=65534 --clear-groups"
    $as env HOME=$T/home fio --name=$j --ioengine=nbd --uri="$uri" $(job_args $j) --size=1000M --time_based --runtime="$RT" \
        --output-format=json --output="$T/home/fio.json" >/dev/null 2>"$T/fio.err" || { echo "$round $label $j FAILED: $(tail -1 "$T/fio.err") / repd: $(grep -i "nbd" "$T/run-node-a/r0.log" | grep -iv "export at" | tail -2)"; continue; }
    c1=$(cpu_ticks $pids)
    python3 - "$T/home/fio.json" "$round" "$label" "$j" "$((c1 - c0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
f, rnd, label, job, ticks, hz = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
side = json.load(open(f))["jobs"][0]["write"]; ios = max(side["total_ios"], 1)
print(f"{rnd} {label} {job} iops={side['iops']:.0f} lat_us={side['lat_ns']['mean']/1000:.1f} MBps={side['bw_bytes']/1e6:.0f} cpu_us_per_io={ticks/hz*1e6/ios:.2f}")
PY
  done
  adm node-a cstate r0 2>/dev/null | grep -q ^Connected || echo "$round $label WARNING link not Connected after the jobs"
  take_down; }

sync_round() { # label link_tls: a full sync of SIZE_MIB, node-a forced Primary over an Inconsistent peer
  label=$1; write_res "$2" unix; bring_up
  local pids c0 c1 t0 t1; pids=$(pgrep -f "$T/r0.res" | tr '\n' ' '); c0=$(cpu_ticks $pids); t0=$(date +%s.%N)
  adm node-a primary --force r0 >/dev/null 2>&1 || echo "$round $label WARNING primary --force failed"
  adm node-b wait-sync --timeout 300 r0 >/dev/null 2>&1 || echo "$round $label WARNING wait-sync failed"
  t1=$(date +%s.%N); c1=$(cpu_ticks $pids)
  adm node-a dstate r0 2>/dev/null | grep -q "^UpToDate/UpToDate" || echo "$round $label WARNING not UpToDate/UpToDate after the sync"
  # The data area only: internal metadata at the end of each file is the node's own.
  local size; size=$(adm node-a status --json r0 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['size_bytes'])")
  cmp -s -n "${size:-0}" "$D/disk-a" "$D/disk-b" && [ "${size:-0}" -gt 0 ] || echo "$round $label WARNING the data areas differ after the sync (size ${size:-unknown})"
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); mib=int(sys.argv[3]); ticks=int(sys.argv[4]); hz=int(sys.argv[5])
print(f'{sys.argv[6]} {sys.argv[7]} sync MBps={mib*1048576/s/1e6:.0f} secs={s:.2f} cpu_s={ticks/hz:.2f}')" \
    "$t0" "$t1" "$SIZE_MIB" "$((c1 - c0))" "$(getconf CLK_TCK)" "$round" "$label"
  take_down; }

pki; C=$T/home/.pki/libnbd; mkdir -p "$C"
cp "$T/pki/ca-cert.pem" "$C/ca-cert.pem"; cp "$T/pki/client-cert.pem" "$C/client-cert.pem"
cp "$T/pki/client-key.pem" "$C/client-key.pem"; chmod 600 "$C/client-key.pem"
chmod 711 "$T"; chown -R 65534:65534 "$T/home"
has_io=0; for j in $JOBS; do [ "$j" != sync ] && has_io=1; done
for round in $(seq 1 "$ROUNDS"); do
  if [ $has_io = 1 ]; then io_round link-plain 0 unix; io_round link-tls 1 unix; io_round nbd-tcp 0 tcp; io_round nbd-tls 0 tls; fi
  if [[ " $JOBS " == *" sync "* ]]; then sync_round sync-plain 0; sync_round sync-tls 1; fi
done | tee "$T/all.txt"
python3 - "$T/all.txt" <<'PY'
import sys, statistics as st, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) < 4 or "=" not in p[3]: continue
    rows[(p[1], p[2])].append({k: float(v) for k, v in (x.split("=") for x in p[3:])})
def med(s, j, k):
    v = [r[k] for r in rows.get((s, j), []) if k in r]; return st.median(v) if v else None
print("\nmedians (config job iops lat_us MBps cpu_us_per_io | sync: MBps secs cpu_s), spread = (max-min)/median:")
for (s, j), v in sorted(rows.items()):
    keys = ["MBps", "secs", "cpu_s"] if j == "sync" else ["iops", "lat_us", "MBps", "cpu_us_per_io"]
    main = keys[0] if j != "sync" else "MBps"
    a = [r[main] for r in v]; spread = (max(a) - min(a)) / st.median(a) * 100 if st.median(a) else 0
    print(f"  {s:10} {j:4} " + " ".join(f"{k}={med(s,j,k):.2f}" for k in keys) + f"  spread {spread:.0f}% over {len(v)}")
    if spread > 10: print(f"  WARNING {s} {j} moved {spread:.0f}% between rounds: a noisy machine")
def ratio(name, num, den):
    if num is None or den in (None, 0): return
    print(f"  {name:52} {num/den:6.2f}")
print("\nratios TLS / plaintext (same run, medians):")
for j in ("w32", "w1", "s8"):
    ratio(f"link TLS {j} IOPS", med("link-tls", j, "iops"), med("link-plain", j, "iops"))
    ratio(f"link TLS {j} latency", med("link-tls", j, "lat_us"), med("link-plain", j, "lat_us"))
    ratio(f"link TLS {j} CPU per I/O", med("link-tls", j, "cpu_us_per_io"), med("link-plain", j, "cpu_us_per_io"))
for j in ("w32", "w1", "s8"):
    ratio(f"NBD TLS {j} IOPS (vs NBD TCP)", med("nbd-tls", j, "iops"), med("nbd-tcp", j, "iops"))
    ratio(f"NBD TLS {j} latency (vs NBD TCP)", med("nbd-tls", j, "lat_us"), med("nbd-tcp", j, "lat_us"))
    ratio(f"NBD TLS {j} CPU per I/O (vs NBD TCP)", med("nbd-tls", j, "cpu_us_per_io"), med("nbd-tcp", j, "cpu_us_per_io"))
ratio("full sync rate with link TLS", med("sync-tls", "sync", "MBps"), med("sync-plain", "sync", "MBps"))
ratio("full sync CPU with link TLS", med("sync-tls", "sync", "cpu_s"), med("sync-plain", "sync", "cpu_s"))
PY

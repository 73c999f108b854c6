#!/usr/bin/env bash
# Vendored from the shared bench kit (shared/bench/anchors.sh) so that a fresh clone has it. It is
# the wider anchor survey (qemu-nbd, nbd-server, qsd without the mirror, cp/dd, iperf3), run by
# hand; rep's own benchmark is bench/run.sh, which has its own copy of the jobs and of the QEMU
# mirror set-up and does not call this script. Differs from the shared copy in these comments.
# anchors.sh — performance anchors for "rep" (userspace DRBD-like replicated block device over NBD).
#
# Self-contained. Creates 1 GiB backing files on /dev/shm (removed at exit by a trap), starts each
# server, runs the SAME fio job set against each over NBD, stops the server, and prints a table.
#
# Servers:
#   nbdkit        nbdkit file plugin, unix socket                      (unreplicated ceiling)
#   qemu-nbd-wb   qemu-nbd raw, unix socket, --cache=writeback --aio=threads
#   qemu-nbd-none qemu-nbd raw, unix socket, --cache=none (O_DIRECT; tmpfs supports it on this kernel)
#   qsd-plain     qemu-storage-daemon, same file->raw stack as mirror node A, no mirror (same-binary control)
#   qsd-mirror    KEY ANCHOR: qemu-storage-daemon node A (unix socket export) with blockdev-mirror
#                 copy-mode=write-blocking (active mirror, sync) to node B = qemu-storage-daemon NBD
#                 export on TCP 127.0.0.2 backed by another file. Initial full copy time is measured
#                 (1 GiB of random data = "full resync" anchor) and synchrony is verified.
#   nbd-server    nbd-server 3.24, unix socket (optional, SKIP_NBD_SERVER=1 to skip)
#   rep           only if REP_URI (or REP_START_CMD + REP_URI_AFTER_START) is given; bench/run.sh is
#                 rep's own benchmark
# Extras: nbdcopy 1 GiB nbdkit(127.0.0.1 TCP) -> nbdkit(127.0.0.2 TCP); cp/dd 1 GiB on /dev/shm;
#         TCP loopback 127.0.0.1 -> 127.0.0.2 (iperf3 if installed, plus a python stream + ping-pong).
#
# Network: ONLY 127.0.0.0/8. Every load is bounded in time (fio runtime=) and size (1 GiB exports).
#
# Usage: anchors.sh [all|rep|<server> ...]      e.g.  anchors.sh all ;  REP_URI='nbd+unix:///r0?socket=/run/rep.sock' anchors.sh rep
# Env:   OUT_DIR (default ./anchor-results/run-<UTC timestamp>), RT_W (15), RT_R (10),
#        PORT_BASE (20800), SKIP_NBD_SERVER, SKIP_EXTRAS, REP_URI, REP_START_CMD
set -euo pipefail

RT_W=${RT_W:-15}            # seconds, write jobs
RT_R=${RT_R:-10}            # seconds, read job
PORT_BASE=${PORT_BASE:-20800}
SIZE_MIB=1024
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR=${OUT_DIR:-$PWD/anchor-results/run-$TS}
WORK=/dev/shm/repbench.$$
mkdir -p "$OUT_DIR" "$WORK"
RESULTS_KV="$OUT_DIR/extras.tsv"     # key<TAB>value<TAB>unit lines
: > "$RESULTS_KV"

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        kill -CONT "$p" 2>/dev/null || true
        pkill -TERM -P "$p" 2>/dev/null || true    # children of OUR server (nbd-server forks per client)
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.3
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
kv()  { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >> "$RESULTS_KV"; log "  $1 = $2 ${3:-}"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.3f}')" "$1" "$2"; }

stop_pid() {   # stop one server we started, by pid
    local p=$1
    kill -CONT "$p" 2>/dev/null || true
    pkill -TERM -P "$p" 2>/dev/null || true
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

wait_nbd() {   # wait until an NBD URI answers (max 15 s)
    local uri=$1
    for _ in $(seq 150); do
        if nbdinfo --size "$uri" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "ERROR: $uri did not come up"; return 1
}

# ---------------------------------------------------------------------------------------------
# Backing data: one 1 GiB random seed, copied (cp on tmpfs) for each server so reads hit real data
# and no server can short-cut zeroes/holes.
make_seed() {
    log "creating 1 GiB random seed on /dev/shm"
    # openssl-free, fast: AES-CTR-like stream via python's random.randbytes (not crypto; just non-zero, incompressible)
    python3 - "$WORK/seed.img" <<'EOF'
import random, sys
r = random.Random(1234)
with open(sys.argv[1], 'wb') as f:
    for _ in range(1024):
        f.write(r.randbytes(1 << 20))
EOF
}
fresh_copy() { cp --sparse=never "$WORK/seed.img" "$1"; }

# ---------------------------------------------------------------------------------------------
# The fio job set. Identical for every server. $1 = name, $2 = NBD URI.
# Common: ioengine=nbd, whole 1 GiB export, time_based, randrepeat (fixed seed), norandommap.
FIO_COMMON=(--ioengine=nbd --time_based --norandommap --randrepeat=1 --group_reporting
            --percentile_list=50:99:99.9 --output-format=json)
run_fio_suite() {
    local name=$1 uri=$2 d="$OUT_DIR/$1"
    mkdir -p "$d"
    log "fio suite on $name ($uri)"
    fio --name=randwrite-4k-qd32 "${FIO_COMMON[@]}" --uri="$uri" --rw=randwrite --bs=4k --iodepth=32 --numjobs=1 --runtime="$RT_W" --output="$d/randwrite-4k-qd32.json" >/dev/null
    fio --name=randwrite-4k-qd1  "${FIO_COMMON[@]}" --uri="$uri" --rw=randwrite --bs=4k --iodepth=1  --numjobs=1 --runtime="$RT_W" --output="$d/randwrite-4k-qd1.json" >/dev/null
    fio --name=seqwrite-1m-qd8   "${FIO_COMMON[@]}" --uri="$uri" --rw=write     --bs=1M --iodepth=8  --numjobs=1 --runtime="$RT_W" --output="$d/seqwrite-1m-qd8.json" >/dev/null
    fio --name=randread-4k-qd32  "${FIO_COMMON[@]}" --uri="$uri" --rw=randread  --bs=4k --iodepth=32 --numjobs=1 --runtime="$RT_R" --output="$d/randread-4k-qd32.json" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# a. nbdkit file plugin over a unix socket
bench_nbdkit() {
    local img="$WORK/nbdkit.img" sock="$WORK/nbdkit.sock"
    fresh_copy "$img"; rm -f "$sock"
    nbdkit -f -U "$sock" file "$img" & local pid=$!; PIDS+=("$pid")
    wait_nbd "nbd+unix:///?socket=$sock"
    run_fio_suite nbdkit "nbd+unix:///?socket=$sock"
    stop_pid "$pid"; rm -f "$img"
}

# b. qemu-nbd raw over a unix socket; $1 = writeback|none
bench_qemu_nbd() {
    local cache=$1 img="$WORK/qnbd.img" sock="$WORK/qnbd.sock"
    fresh_copy "$img"; rm -f "$sock"
    qemu-nbd -f raw -k "$sock" -x d -t -e 4 --cache="$cache" --aio=threads "$img" & local pid=$!; PIDS+=("$pid")
    wait_nbd "nbd+unix:///d?socket=$sock"
    run_fio_suite "qemu-nbd-$([ "$cache" = writeback ] && echo wb || echo none)" "nbd+unix:///d?socket=$sock"
    stop_pid "$pid"; rm -f "$img"
}

# b2. qemu-storage-daemon exporting the same file->raw stack as mirror node A, but WITHOUT the mirror:
#     the same-binary control, so qsd-mirror / qsd-plain isolates the cost of synchronous replication.
bench_qsd_plain() {
    local a="$WORK/P.img" asock="$WORK/P.sock"
    fresh_copy "$a"; rm -f "$asock"
    qemu-storage-daemon \
        --blockdev driver=file,node-name=a0,filename="$a" \
        --blockdev driver=raw,node-name=a1,file=a0 \
        --nbd-server addr.type=unix,addr.path="$asock" \
        --export type=nbd,id=ea,node-name=a1,name=a,writable=on & local pid=$!; PIDS+=("$pid")
    wait_nbd "nbd+unix:///a?socket=$asock"
    run_fio_suite qsd-plain "nbd+unix:///a?socket=$asock"
    stop_pid "$pid"; rm -f "$a"
}

# QMP helper (python, stdlib only)
write_qmp_helper() {
    cat > "$WORK/qmp.py" <<'EOF'
import json, socket, sys, time
class QMP:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX); self.s.connect(path)
        self.f = self.s.makefile('rwb'); self.events = []
        json.loads(self.f.readline())                      # greeting
        self.cmd('qmp_capabilities')
    def cmd(self, name, **args):
        self.f.write(json.dumps({'execute': name, 'arguments': args}).encode() + b'\n'); self.f.flush()
        while True:
            m = json.loads(self.f.readline())
            if 'event' in m: self.events.append(m); continue
            if 'error' in m: raise RuntimeError(f"{name}: {m['error']}")
            return m['return']
    def wait_event(self, ev, timeout):
        end = time.time() + timeout
        while time.time() < end:
            for e in self.events:
                if e['event'] == ev: return e
            self.s.settimeout(max(0.1, end - time.time()))
            try: line = self.f.readline()
            except socket.timeout: continue
            finally: self.s.settimeout(None)
            if line: self.events.append(json.loads(line))
        raise TimeoutError(ev)
if __name__ == '__main__':
    q = QMP(sys.argv[1]); op = sys.argv[2]
    if op == 'mirror':            # qmp.py SOCK mirror HOST PORT EXPORT  -> prints seconds to READY
        host, port, exp = sys.argv[3], sys.argv[4], sys.argv[5]
        q.cmd('blockdev-add', **{'driver': 'nbd', 'node-name': 'tgt', 'export': exp,
              'server': {'type': 'inet', 'host': host, 'port': port}})
        t0 = time.time()
        q.cmd('blockdev-mirror', **{'job-id': 'm0', 'device': 'a1', 'target': 'tgt', 'sync': 'full',
              'copy-mode': 'write-blocking'})
        q.wait_event('BLOCK_JOB_READY', 300)
        print(f"{time.time() - t0:.3f}")
    elif op == 'jobs':
        print(json.dumps(q.cmd('query-block-jobs')))
    elif op == 'cancel':
        q.cmd('block-job-cancel', device='m0', force=True)
EOF
}

# c. KEY ANCHOR: qemu-storage-daemon active mirror (write-blocking) A -> B over TCP 127.0.0.2
bench_qsd_mirror() {
    local a="$WORK/A.img" b="$WORK/B.img" asock="$WORK/A.sock" qmp="$WORK/A.qmp" port=$((PORT_BASE + 10))
    local vf="$OUT_DIR/qsd-mirror-verification.txt"
    fresh_copy "$a"; truncate -s ${SIZE_MIB}M "$b"; rm -f "$asock" "$qmp"
    write_qmp_helper
    # node B: plain NBD export on TCP 127.0.0.2 (writeback, default cache)
    qemu-storage-daemon \
        --blockdev driver=file,node-name=b0,filename="$b" \
        --blockdev driver=raw,node-name=b1,file=b0 \
        --nbd-server addr.type=inet,addr.host=127.0.0.2,addr.port=$port \
        --export type=nbd,id=eb,node-name=b1,name=b,writable=on & local pidb=$!; PIDS+=("$pidb")
    wait_nbd "nbd://127.0.0.2:$port/b"
    # node A: file -> raw (a1) exported on a unix socket, QMP on a unix socket (writeback, default cache)
    qemu-storage-daemon \
        --chardev socket,id=qmp0,path="$qmp",server=on,wait=off --monitor chardev=qmp0 \
        --blockdev driver=file,node-name=a0,filename="$a" \
        --blockdev driver=raw,node-name=a1,file=a0 \
        --nbd-server addr.type=unix,addr.path="$asock" \
        --export type=nbd,id=ea,node-name=a1,name=a,writable=on & local pida=$!; PIDS+=("$pida")
    wait_nbd "nbd+unix:///a?socket=$asock"
    log "starting blockdev-mirror copy-mode=write-blocking A(unix) -> B(127.0.0.2:$port), 1 GiB random data"
    local t; t=$(python3 "$WORK/qmp.py" "$qmp" mirror 127.0.0.2 "$port" b)
    kv qsd_mirror_initial_full_copy_1GiB_s "$t" s
    kv qsd_mirror_initial_full_copy_MBps "$(python3 -c "print(f'{1073.741824/float(\"$t\"):.0f}')")" MB/s
    {
        echo "== qsd-mirror verification ($(date -u +%FT%TZ)) =="
        echo "query-block-jobs after READY: $(python3 "$WORK/qmp.py" "$qmp" jobs)"
        echo "-- 1. after initial full copy: cmp A.img B.img"
        if cmp "$a" "$b"; then echo "IDENTICAL"; fi
        echo "-- 2. write patterns through A's NBD export with qemu-io, then immediately read B's FILE directly"
        qemu-io --image-opts "driver=nbd,server.type=unix,server.path=$asock,export=a" \
            -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 536866816 8k' -c 'write -P 0xef 1073737728 4k' 2>&1 | sed 's/^/   qemu-io A: /' || true
        qemu-io -f raw -r "$b" -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 536866816 8k' -c 'read -P 0xef 1073737728 4k' 2>&1 | sed 's/^/   qemu-io B file: /' || true
        echo "-- 3. SIGSTOP node B, write 64k through A: the write must NOT complete while B is stopped"
        kill -STOP "$pidb"
        qemu-io --image-opts "driver=nbd,server.type=unix,server.path=$asock,export=a" -c 'write -P 0x5a 4194304 64k' > "$WORK/blocked.out" 2>&1 & local qio=$!
        sleep 2
        if kill -0 "$qio" 2>/dev/null; then echo "   after 2 s with B stopped: write still PENDING (blocked on B) -> synchronous"; else echo "   after 2 s with B stopped: write COMPLETED -> NOT synchronous"; fi
        kill -CONT "$pidb"; wait "$qio" || true
        sed 's/^/   qemu-io A (after SIGCONT B): /' "$WORK/blocked.out"
        qemu-io -f raw -r "$b" -c 'read -P 0x5a 4194304 64k' 2>&1 | sed 's/^/   qemu-io B file: /' || true
    } > "$vf" 2>&1
    run_fio_suite qsd-mirror "nbd+unix:///a?socket=$asock"
    {
        echo "-- 4. after the whole fio suite (random data at random offsets), mirror still running: cmp A.img B.img"
        if cmp "$a" "$b"; then echo "IDENTICAL"; fi
        echo "query-block-jobs at end: $(python3 "$WORK/qmp.py" "$qmp" jobs)"
    } >> "$vf" 2>&1
    cat "$vf" >&2
    python3 "$WORK/qmp.py" "$qmp" cancel || true
    stop_pid "$pida"; stop_pid "$pidb"; rm -f "$a" "$b"
}

# d. nbd-server over a unix socket
bench_nbd_server() {
    local img="$WORK/nbds.img" sock="$WORK/nbds.sock" conf="$WORK/nbd-server.conf"
    fresh_copy "$img"; rm -f "$sock"
    printf '[generic]\n    unixsock = %s\n    allowlist = false\n[d]\n    exportname = %s\n    readonly = false\n' "$sock" "$img" > "$conf"
    # (-d would serve a single client and exit, so let it daemonize and take its pid from the pid file)
    nbd-server -C "$conf" -p "$WORK/nbd-server.pid" >"$WORK/nbd-server.log" 2>&1
    for _ in $(seq 50); do [ -s "$WORK/nbd-server.pid" ] && break; sleep 0.1; done
    local pid; pid=$(cat "$WORK/nbd-server.pid"); PIDS+=("$pid")
    wait_nbd "nbd+unix:///d?socket=$sock"
    run_fio_suite nbd-server "nbd+unix:///d?socket=$sock"
    stop_pid "$pid"; rm -f "$img"
}

# ---------------------------------------------------------------------------------------------
# rep: measured here only when REP_URI names a running Primary's export (or REP_START_CMD and
# REP_URI_AFTER_START start one); bench/run.sh brings up rep's pair itself and is the benchmark
# to use for rep.
start_rep() {
    echo "rep: set REP_URI to a running Primary's export, or use bench/run.sh" >&2
    return 2
}
bench_rep() {
    local uri=${REP_URI:-} pid=""
    if [ -z "$uri" ] && [ -n "${REP_START_CMD:-}" ]; then
        bash -c "$REP_START_CMD" & pid=$!; PIDS+=("$pid")
        uri=${REP_URI_AFTER_START:?REP_URI_AFTER_START must name the URI REP_START_CMD exports}
    fi
    if [ -z "$uri" ]; then uri=$(start_rep) || { kv rep_status "not-available"; return 0; }; fi
    wait_nbd "$uri"
    run_fio_suite rep "$uri"
    [ -n "$pid" ] && stop_pid "$pid"
    return 0
}

# ---------------------------------------------------------------------------------------------
bench_extras() {
    log "extras: cp / dd 1 GiB on /dev/shm"
    local t0 t1
    t0=$(now); cp --sparse=never "$WORK/seed.img" "$WORK/cp.img"; t1=$(now)
    local cps; cps=$(elapsed "$t0" "$t1"); kv cp_1GiB_shm_s "$cps" s
    kv cp_1GiB_shm_MBps "$(python3 -c "print(f'{1073.741824/$cps:.0f}')")" MB/s; rm -f "$WORK/cp.img"
    local ddout; ddout=$(dd if="$WORK/seed.img" of="$WORK/dd.img" bs=1M 2>&1 | tail -1)
    local dds; dds=$(echo "$ddout" | sed -E 's/.*copied, ([0-9.]+) s.*/\1/')
    kv dd_1GiB_shm_bs1M_s "$dds" s
    kv dd_1GiB_shm_bs1M_MBps "$(python3 -c "print(f'{1073.741824/$dds:.0f}')")" MB/s; rm -f "$WORK/dd.img"

    log "extras: nbdcopy 1 GiB nbdkit(127.0.0.1) -> nbdkit(127.0.0.2) over TCP"
    local src="$WORK/ncsrc.img" dst="$WORK/ncdst.img" p1=$((PORT_BASE + 1)) p2=$((PORT_BASE + 2))
    fresh_copy "$src"; truncate -s ${SIZE_MIB}M "$dst"
    nbdkit -f -i 127.0.0.1 -p "$p1" file "$src" & local pa=$!; PIDS+=("$pa")
    nbdkit -f -i 127.0.0.2 -p "$p2" file "$dst" & local pb=$!; PIDS+=("$pb")
    wait_nbd "nbd://127.0.0.1:$p1"; wait_nbd "nbd://127.0.0.2:$p2"
    local c
    for c in 4 1; do
        truncate -s 0 "$dst"; truncate -s ${SIZE_MIB}M "$dst"
        t0=$(now); nbdcopy --connections=$c --flush "nbd://127.0.0.1:$p1" "nbd://127.0.0.2:$p2"; t1=$(now)
        local s; s=$(elapsed "$t0" "$t1")
        kv "nbdcopy_1GiB_tcp_conn${c}_s" "$s" s
        kv "nbdcopy_1GiB_tcp_conn${c}_MBps" "$(python3 -c "print(f'{1073.741824/$s:.0f}')")" MB/s
        cmp "$src" "$dst" >/dev/null && kv "nbdcopy_conn${c}_verify" "identical" "" || kv "nbdcopy_conn${c}_verify" "DIFFERENT" ""
    done
    stop_pid "$pa"; stop_pid "$pb"; rm -f "$src" "$dst"

    log "extras: TCP loopback 127.0.0.1 -> 127.0.0.2"
    if command -v iperf3 >/dev/null 2>&1; then
        local ip=$((PORT_BASE + 3))
        iperf3 -s -B 127.0.0.2 -p "$ip" -1 >/dev/null 2>&1 & local ipid=$!; PIDS+=("$ipid")
        sleep 0.5
        iperf3 -c 127.0.0.2 -B 127.0.0.1 -p "$ip" -t 5 -J > "$OUT_DIR/iperf3.json" 2>/dev/null || true
        kv iperf3_tcp_5s_Gbps "$(python3 -c "import json;d=json.load(open('$OUT_DIR/iperf3.json'));print(f\"{d['end']['sum_received']['bits_per_second']/1e9:.2f}\")" 2>/dev/null || echo n/a)" Gbit/s
        wait "$ipid" 2>/dev/null || true
    fi
    python3 - "$((PORT_BASE + 4))" "$RESULTS_KV" <<'EOF'
import socket, sys, threading, time
port = int(sys.argv[1]); out = open(sys.argv[2], 'a')
# stream: 2 s of 1 MiB sends, 127.0.0.1 -> 127.0.0.2
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(('127.0.0.2', port)); srv.listen(1)
got = [0]
def sink():
    c, _ = srv.accept(); buf = bytearray(1 << 20); v = memoryview(buf)
    while True:
        n = c.recv_into(v)
        if not n: break
        got[0] += n
    c.close()
th = threading.Thread(target=sink); th.start()
cl = socket.socket(); cl.bind(('127.0.0.1', 0)); cl.connect(('127.0.0.2', port))
data = b'\x5a' * (1 << 20); t0 = time.time()
while time.time() - t0 < 2.0: cl.sendall(data)
cl.close(); th.join(); dt = time.time() - t0
out.write(f"python_tcp_stream_2s_MBps\t{got[0]/dt/1e6:.0f}\tMB/s\n")
# ping-pong: 64-byte request / 64-byte reply, TCP_NODELAY (upper bound on RTT incl. python overhead)
def echo():
    c, _ = srv.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        m = c.recv(64)
        if not m: break
        c.sendall(m)
    c.close()
th = threading.Thread(target=echo); th.start()
cl = socket.socket(); cl.bind(('127.0.0.1', 0)); cl.connect(('127.0.0.2', port)); cl.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n = 20000; msg = b'x' * 64; t0 = time.time()
for _ in range(n):
    cl.sendall(msg); r = 0
    while r < 64: r += len(cl.recv(64 - r))
dt = time.time() - t0; cl.close(); th.join(); srv.close()
out.write(f"python_tcp_pingpong_64B_rtt_us\t{dt/n*1e6:.1f}\tus\n")
EOF
    tail -2 "$RESULTS_KV" >&2
}

# ---------------------------------------------------------------------------------------------
print_table() {
    python3 - "$OUT_DIR" <<'EOF'
import json, os, sys
out = sys.argv[1]
jobs = ['randwrite-4k-qd32', 'randwrite-4k-qd1', 'seqwrite-1m-qd8', 'randread-4k-qd32']
order = ['nbdkit', 'qemu-nbd-wb', 'qemu-nbd-none', 'qsd-plain', 'qsd-mirror', 'nbd-server', 'rep']
servers = [s for s in order if os.path.isdir(os.path.join(out, s))]
res = {}
def load(s, j):
    p = os.path.join(out, s, j + '.json')
    if not os.path.exists(p): return None
    d = json.load(open(p)); x = d['jobs'][0]
    io = x['read'] if 'read' in j else x['write']
    return dict(iops=io['iops'], mbps=io['bw_bytes'] / 1e6, mean=io['clat_ns']['mean'] / 1e3,
                p99=io['clat_ns']['percentile']['99.000000'] / 1e3, err=x['error'])
print(f"| server | job | IOPS | MB/s | clat mean µs | clat p99 µs |")
print(f"|---|---|---:|---:|---:|---:|")
for s in servers:
    for j in jobs:
        r = load(s, j); res[(s, j)] = r
        if r is None: print(f"| {s} | {j} | n/a | | | |"); continue
        print(f"| {s} | {j} | {r['iops']:.0f} | {r['mbps']:.1f} | {r['mean']:.1f} | {r['p99']:.1f} |" + (f" err={r['err']}" if r['err'] else ""))
print()
def ratio(a, b, j, k='iops'):
    ra, rb = res.get((a, j)), res.get((b, j))
    if not ra or not rb: return 'n/a'
    return f"{ra[k] / rb[k]:.3f}"
print("| ratio | randwrite-4k-qd32 IOPS | randwrite-4k-qd1 IOPS | qd1 mean lat (x) | qd1 p99 lat (x) | seqwrite-1m-qd8 MB/s | randread-4k-qd32 IOPS |")
print("|---|---:|---:|---:|---:|---:|---:|")
pairs = [('qsd-mirror', 'nbdkit'), ('qsd-mirror', 'qsd-plain'), ('qsd-mirror', 'qemu-nbd-wb'), ('qemu-nbd-wb', 'nbdkit'), ('qemu-nbd-none', 'nbdkit'), ('nbd-server', 'nbdkit'),
         ('rep', 'nbdkit'), ('rep', 'qsd-mirror'), ('rep', 'qsd-plain')]
for a, b in pairs:
    if a not in servers or b not in servers: continue
    print(f"| {a} / {b} | {ratio(a,b,'randwrite-4k-qd32')} | {ratio(a,b,'randwrite-4k-qd1')} | {ratio(a,b,'randwrite-4k-qd1','mean')} | {ratio(a,b,'randwrite-4k-qd1','p99')} | {ratio(a,b,'seqwrite-1m-qd8','mbps')} | {ratio(a,b,'randread-4k-qd32')} |")
kvp = os.path.join(out, 'extras.tsv')
if os.path.exists(kvp) and os.path.getsize(kvp):
    print(); print("| extra | value | unit |"); print("|---|---:|---|")
    for line in open(kvp):
        k, v, u = (line.rstrip('\n').split('\t') + ['', ''])[:3]
        print(f"| {k} | {v} | {u} |")
EOF
}

# ---------------------------------------------------------------------------------------------
main() {
    local what=("$@"); [ ${#what[@]} -eq 0 ] && what=(all)
    {
        echo "date: $(date -u +%FT%TZ)  host: $(uname -srm)  cpus: $(nproc)  mem: $(free -g | awk '/Mem:/{print $2}') GiB"
        echo "fio: $(fio --version) | nbdkit: $(nbdkit --version) | libnbd/nbdcopy: $(nbdcopy --version | tr '\n' ' ')"
        echo "qemu-storage-daemon: $(qemu-storage-daemon --version | head -1) | qemu-nbd: $(qemu-nbd --version | head -1)"
        echo "nbd-server: $(nbd-server --version 2>&1 | head -1) | iperf3: $(iperf3 --version 2>/dev/null | head -1 || echo none)"
        echo "RT_W=$RT_W RT_R=$RT_R OUT_DIR=$OUT_DIR"
    } | tee "$OUT_DIR/versions.txt" >&2
    make_seed
    for w in "${what[@]}"; do
        case $w in
            all)
                bench_nbdkit; bench_qemu_nbd writeback; bench_qemu_nbd none; bench_qsd_plain; bench_qsd_mirror
                [ -n "${SKIP_NBD_SERVER:-}" ] || bench_nbd_server
                bench_rep
                [ -n "${SKIP_EXTRAS:-}" ] || bench_extras ;;
            nbdkit) bench_nbdkit ;;
            qemu-nbd-wb) bench_qemu_nbd writeback ;;
            qemu-nbd-none) bench_qemu_nbd none ;;
            qsd-plain) bench_qsd_plain ;;
            qsd-mirror) bench_qsd_mirror ;;
            nbd-server) bench_nbd_server ;;
            rep) bench_rep ;;
            extras) bench_extras ;;
            *) echo "unknown: $w" >&2; exit 64 ;;
        esac
    done
    print_table | tee "$OUT_DIR/table.md"
}
main "$@"

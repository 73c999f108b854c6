#!/usr/bin/env python3
"""Sort the samples of a `perf record -g` file into buckets by their call chains (bench/profile.py).

  perf_buckets.py perf.data      prints each bucket's share of the samples, in %

A sample goes to the first rule (top to bottom) that one of its frames matches, leaf first for
the user-space rules: the point is to say what the CPU was doing for rep (copying into tmpfs,
sending on TCP, waking a peer, allocating...), which a flat symbol list does not show.
"""
import collections
import re
import subprocess
import sys

# (bucket, regex on any frame of the chain) — kernel paths by what the syscall was for.
KERNEL_RULES = [
    ("kernel: tmpfs write (pwrite64 into the page cache)", r"shmem_file_write_iter|__x64_sys_pwrite64"),
    ("kernel: tmpfs read", r"shmem_file_read_iter"),
    ("kernel: TCP send (incl. loopback delivery to the peer)", r"tcp_sendmsg"),
    ("kernel: TCP receive", r"tcp_recvmsg"),
    ("kernel: unix socket send (NBD replies)", r"unix_stream_sendmsg"),
    ("kernel: unix socket receive (NBD requests)", r"unix_stream_recvmsg|unix_stream_read_generic"),
    ("kernel: io_uring task work / completions", r"tctx_task_work|io_req_task_complete|__io_run_local_work|io_cqring_wait|io_run_task_work"),
    ("kernel: io_uring submit, other", r"io_submit_sqes|__do_sys_io_uring_enter"),
    ("kernel: epoll_wait / scheduling (idle, switches)", r"ep_poll|do_epoll_wait|__schedule|schedule$|finish_task_switch"),
    ("kernel: futex", r"futex"),
    ("kernel: page faults", r"asm_exc_page_fault|handle_mm_fault"),
    ("kernel: interrupts / softirq", r"asm_common_interrupt|__do_softirq|asm_sysvec"),
    ("kernel: other syscalls", r"do_syscall_64"),
]
USER_RULES = [
    ("user: malloc/free", r"^(_int_malloc|_int_free|malloc|free|cfree|__libc_malloc|__libc_free|realloc|_int_realloc|malloc_consolidate|unlink_chunk|__GI___libc_free|__GI___libc_malloc|tcache|arena)"),
    ("user: memcpy/memmove", r"memmove|memcpy|memset"),
    ("user: hashing", r"sha1|sha2|crc32c|Sha1|Sha256|digest"),
    ("user: engine (core)", r"rep_replicator::core::"),
    ("user: wire encode/decode", r"rep_replicator::wire::"),
    ("user: NBD front end", r"rep_nbd::"),
    ("user: driver / link (runtime)", r"rep_replicator::runtime::"),
    ("user: tokio / tokio-uring / io-uring crate", r"tokio|io_uring::|slab::"),
    ("user: std hash maps / collections", r"hash_one|hashbrown|BTree|VecDeque|alloc::"),
    ("user: clock (vdso)", r"clock_gettime|vdso"),
]


def chains(path):
    p = subprocess.Popen(["perf", "script", "-i", path, "-F", "comm,tid,ip,sym,dso"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
    frames = []
    for line in p.stdout:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                yield frames
            frames = []
            continue
        if line.startswith("\t") or line.startswith(" "):
            m = re.match(r"\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$", line)
            if m:
                frames.append((m.group(1), m.group(2)))
        else:
            frames = []  # header line of a sample
    if frames:
        yield frames
    p.wait()


def bucket(frames):
    leaf_sym, leaf_dso = frames[0]
    kernel = "kernel" in leaf_dso
    if kernel:
        syms = [s for s, _ in frames]
        for name, rx in KERNEL_RULES:
            r = re.compile(rx)
            if any(r.search(s) for s in syms):
                return name
        return "kernel: other"
    for name, rx in USER_RULES:
        if re.search(rx, leaf_sym):
            return name
    # A leaf in libc or std without a rule: charge the nearest rep frame up the chain.
    for s, d in frames[1:]:
        for name, rx in USER_RULES[3:7]:
            if re.search(rx, s):
                return name + " (via libc/std)"
    return f"user: other ({leaf_dso.rsplit('/', 1)[-1]})"


def main(path):
    c = collections.Counter(bucket(f) for f in chains(path))
    total = sum(c.values())
    for name, n in sorted(c.items(), key=lambda x: (not x[0].startswith("kernel"), -x[1])):
        print(f"{n / total * 100:6.1f}%  {name}")
    print(f"{total} samples")


if __name__ == "__main__":
    main(sys.argv[1])

"""A seeded mutation fuzzer over saved index files: every kind is saved, then loaded back
(plainly and memory-mapped) in mutated forms, and searched. A load may fail only with
quanta.FormatError; a search of a loaded mutant may fail only with ValueError (bad content
found late); anything else, and above all a crash, is a finding.

    python tests/fuzz_files.py --mutants 2000            # every kind, 2,000 mutants each
    python tests/fuzz_files.py --long 3600               # an hour, kinds in turn

Mutations: truncation; random byte flips in one section's payload, with the section's
checksum recomputed (so plain loads get past the checksum to the content checks) or not
(mapped loads do not read the large sections' checksums); sizes in META's array shapes and
the header's dim / ntotal replaced by crafted values (with checksums recomputed). Mutants run in a child process, many per child; a child that dies
names the mutant it was running, and the next child goes on after it.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import numpy as np

HEADER, SECTION, ALIGN = 64, struct.Struct("<4sIQ"), 64


def _build(kind):
    """A small saved index of `kind`, as bytes."""
    import quanta
    rng = np.random.default_rng(0)
    x = quanta.datasets.clustered(600, 32, nq=1, seed=1)[0]
    if kind == "sparse":
        indices = np.concatenate([np.sort(rng.choice(500, 12, replace=False)) for _ in range(300)])
        index = quanta.SparseIndex(n_postings=40)
        index.add((np.arange(0, 3601, 12), indices.astype(np.int32),
                   rng.random(3600).astype(np.float32)))
    elif kind == "multivector":
        index = quanta.MultiVectorIndex(32, k_sim=2, d_proj=8, r_reps=2, storage="f16")
        least, quanta.multivector.STAGE_MIN_TOKENS = quanta.multivector.STAGE_MIN_TOKENS, 256
        try:  # 600 tokens: the file holds a token stage
            index.add(x[:600], np.arange(0, 601, 6, dtype=np.int64))
        finally:
            quanta.multivector.STAGE_MIN_TOKENS = least
    elif kind.startswith("empty "):  # as made, untrained: what a save before training writes
        index = quanta.index_factory(32, kind.split(" ", 1)[1])
    else:
        metric = "ip" if "RBE" in kind else "l2"
        index = quanta.index_factory(32, kind, metric=metric)
        if not index.is_trained:
            index.train(x)
        index.add(x, ids=np.arange(600) * 3)
        index.remove([3, 6])
    return index.to_bytes()


KINDS = ["Flat", "Flat(f16)", "Flat(f8e4m3)", "Flat(i8)", "PQ8x8", "PQ8x4fs", "IVF8,PQ8x8",
         "IVF8,PQ8x4fs,Refine(f16)", "RBE64x2", "IVF8,RBE64x2", "Graph8(f16),PQ8x4", "sparse",
         "multivector", "empty IVF8,PQ8x4fs,Refine(i8)", "empty IVF8,RBE64x2",
         "empty Graph8(i8),PQ8x4"]


def _sections(buf):
    """(tag, header offset, payload offset, length) of every section."""
    nsec = struct.unpack_from("<I", buf, 36)[0]  # after magic, versions, kind, dim, ntotal
    out, pos = [], HEADER
    for _ in range(nsec):
        tag, _, length = SECTION.unpack_from(buf, pos)
        start = pos + SECTION.size
        start += (-start) % ALIGN
        out.append((tag.decode(), pos, start, length))
        pos = start + length
    return out


def _fix_crc(buf, sec):
    tag, pos, start, length = sec
    crc = zlib.crc32(bytes(buf[start:start + length]))
    struct.pack_into("<4sIQ", buf, pos, tag.encode(), crc, length)


def mutate(data: bytes, rng) -> tuple[bytes, str]:
    """One mutant of a saved index and what was done to it."""
    buf = bytearray(data)
    secs = _sections(buf)
    how = rng.integers(5)
    if how == 4:  # a crafted header: dim or ntotal replaced, its checksum made right
        field, at = ("dim", 20) if rng.random() < 0.5 else ("ntotal", 28)
        old = struct.unpack_from("<Q", buf, at)[0]
        value = int(rng.choice([0, 1, old - 1, old + 1, old * 2, 1 << 31, 1 << 62, (1 << 64) - 1]))
        struct.pack_into("<Q", buf, at, value % (1 << 64))
        struct.pack_into("<I", buf, 60, zlib.crc32(bytes(buf[:60])))
        return bytes(buf), f"header {field} = {value}"
    if how == 0:
        cut = int(rng.integers(0, len(buf)))
        return bytes(buf[:cut]), f"truncated at {cut}"
    if how == 3:  # a crafted META: one array's shape scaled, checksum made right
        meta = next(s for s in secs if s[0] == "META")
        doc = json.loads(bytes(buf[meta[2]:meta[2] + meta[3]]))
        tags = sorted(doc.get("arrays", {}))
        if tags:
            tag = tags[int(rng.integers(len(tags)))]
            dtype, shape = doc["arrays"][tag]
            if shape:
                axis = int(rng.integers(len(shape)))
                shape[axis] = int(shape[axis] * rng.choice([0, 2, 1 << 20]) + rng.integers(-1, 2))
                doc["arrays"][tag] = [dtype, shape]
                payload = json.dumps(doc, sort_keys=True).encode()
                # rebuild the file with the new META (lengths change)
                return _with_section(buf, secs, "META", payload), f"META {tag} shape {shape}"
        how = 1
    sec = secs[int(rng.integers(len(secs)))]
    tag, pos, start, length = sec
    if length == 0:
        return bytes(buf), f"no-op on empty {tag}"
    flips = int(rng.integers(1, 9))
    for _ in range(flips):
        i = start + int(rng.integers(length))
        buf[i] ^= 1 << int(rng.integers(8)) if rng.random() < 0.5 else int(rng.integers(1, 256))
    if how == 1:
        _fix_crc(buf, sec)
    return bytes(buf), f"{flips} flips in {tag}" + (" (crc fixed)" if how == 1 else "")


def _with_section(buf, secs, tag, payload):
    head = bytearray(buf[:HEADER])
    out = bytearray(head)
    for t, pos, start, length in secs:
        body = payload if t == tag else bytes(buf[start:start + length])
        out += SECTION.pack(t.encode(), zlib.crc32(body), len(body))
        out += b"\x00" * ((-len(out)) % ALIGN)
        out += body
    return bytes(out)


CHILD_MEMORY = 2 << 30  # bytes of address space: a crafted size must not allocate its way past
MUTANT_SECONDS = 60     # a child's time for one mutant (its load and search): more is a hang


def _load_bytes(data):
    import quanta
    return quanta.from_bytes(data)


def _child(path_list):
    """Loads and searches each mutant named in the file, printing its number first."""
    import resource
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):  # ASan reserves terabytes of
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))  # address space
    import quanta
    q = np.random.default_rng(2).standard_normal((3, 32)).astype(np.float32)
    for line in open(path_list):
        n, kind, path = line.split("\t")
        path = path.strip()
        print(f"run {n}", flush=True)
        for mmap in (False, True):
            try:
                index = quanta.load(path, mmap=mmap)
            except quanta.FormatError:
                continue
            except Exception as e:  # noqa: BLE001 - reported, not raised
                print(f"bad {n} load(mmap={mmap}) {type(e).__name__}: {str(e)[:150]}", flush=True)
                continue
            try:
                if kind == "sparse":  # every term: each posting list is read
                    index.search((np.array([0, 500]), np.arange(500, dtype=np.int32),
                                  np.ones(500, np.float32)), 5)
                elif kind == "multivector":
                    index.search(q, np.array([0, 3], np.int64), k=5, exact=False)
                else:
                    index.search(q, 5)
                print(f"searched {n}", flush=True)
            except ValueError:
                pass
            except Exception as e:  # noqa: BLE001
                print(f"bad {n} search(mmap={mmap}) {type(e).__name__}: {str(e)[:150]}",
                      flush=True)
    print("done", flush=True)


def _run_child(listing, tmp):
    """Runs a child over the mutants in `listing`; returns (exit code, or "timeout" when one
    mutant took more than MUTANT_SECONDS, its output lines, the tail of its stderr). The
    deadline is per mutant, so a batch of any size on a slow or busy machine is no hang."""
    err_path = os.path.join(tmp, "child.err")
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--child", listing],
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        lines = queue.Queue()

        def pump():  # the child's lines, then None at its end
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        out, hung = [], False
        while True:
            try:
                line = lines.get(timeout=MUTANT_SECONDS)
            except queue.Empty:  # the mutant it is on hangs
                proc.kill()
                hung = True
                break
            if line is None:
                break
            out.append(line)
        code = proc.wait()
    with open(err_path) as err:
        stderr = err.read()[-2000:]
    return ("timeout" if hung else code), out, ("hung" if hung else stderr)


def run(kinds, mutants, seed=0, log=print, keep=None):
    """Fuzzes each kind with `mutants` mutants; returns the findings (crashes first)."""
    findings, searched = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for kind in kinds:
            data = _build(kind)
            try:  # the file as saved must load, or a FormatError of every mutant means nothing
                _load_bytes(data)
            except Exception as e:  # noqa: BLE001 - reported, not raised
                findings.append(f"{kind} [as saved]: {type(e).__name__}: {str(e)[:150]}")
            rng = np.random.default_rng([seed, KINDS.index(kind)])
            for i in range(mutants):
                blob, what = mutate(data, rng)
                path = os.path.join(tmp, f"{len(jobs)}.qnt")
                with open(path, "wb") as f:
                    f.write(blob)
                jobs.append((kind, what, path))
        start = 0
        while start < len(jobs):
            listing = os.path.join(tmp, "jobs.txt")
            with open(listing, "w") as f:
                for n in range(start, len(jobs)):
                    f.write(f"{n}\t{jobs[n][0]}\t{jobs[n][2]}\n")
            returncode, lines, stderr = _run_child(listing, tmp)
            last = start
            for line in lines:
                if line.startswith("run "):
                    last = int(line.split()[1])
                elif line.startswith("searched "):
                    searched += 1
                elif line.startswith("bad "):
                    n = int(line.split()[1])
                    findings.append(f"{jobs[n][0]} [{jobs[n][1]}]: {line.split(' ', 2)[2]}")
            if lines[-1:] == ["done"]:
                break
            kept = os.path.join(keep or tempfile.gettempdir(), f"quanta-fuzz-crash-{seed}-{last}.qnt")
            with open(jobs[last][2], "rb") as src, open(kept, "wb") as dst:
                dst.write(src.read())
            findings.insert(0, f"CRASH (exit {returncode}) {jobs[last][0]} "
                               f"[{jobs[last][1]}], kept as {kept}: {stderr.strip()[-200:]}")
            log(findings[0])
            start = last + 1
    log(f"{len(jobs)} mutants of {len(kinds)} kinds; {searched} loads searched; "
        f"{len(findings)} findings")
    return findings


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutants", type=int, default=200, help="per kind")
    ap.add_argument("--kinds", default=";".join(KINDS), help="specs separated by ;")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--long", type=float, default=0, help="seconds to keep fuzzing")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child)
        return
    kinds = args.kinds.split(";")
    seed, t0, total = args.seed, time.time(), []
    while True:
        total += run(kinds, args.mutants, seed)
        seed += 1
        if time.time() - t0 >= args.long:
            break
    print(f"{len(total)} findings")
    for f in total:
        print(" ", f)
    sys.exit(1 if total else 0)


if __name__ == "__main__":
    main()

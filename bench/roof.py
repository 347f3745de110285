"""Machine roofs for the flat-search benchmark.

* sgemm GFLOP/s with numpy's BLAS, at 1 thread and at all threads
  (square float32 matmul, best of a few runs);
* memory read bandwidth in GB/s, at 1 thread and at all threads, STREAM-like:
  one pass over a large float32 array (default 512 MiB) by a BLAS sgemv
  (A @ ones) and by numpy's add.reduce (split over Python threads for the
  all-core figure; numpy releases the GIL in the reduction), best of both.

Each measurement runs in a fresh subprocess whose OPENBLAS/MKL/OMP thread
variables are set before numpy is imported, so the thread count is real.

    python -m bench.roof [--threads 2] [--mem-mb 512] [--json roof.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


# --------------------------------------------------------------------------
# workers (run inside the subprocess)
# --------------------------------------------------------------------------

def _worker_sgemm(threads: int, size: int, reps: int) -> dict:
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    c = a @ b  # warm-up (thread pool start, page faults)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return {"gflops": 2.0 * size ** 3 / best / 1e9, "seconds": best, "size": size}


def _worker_read(threads: int, mem_mb: int, reps: int) -> dict:
    import threading

    import numpy as np
    n = mem_mb * (1 << 20) // 4
    cols = 4096
    n -= n % cols
    a = np.ones(n, dtype=np.float32)
    a2 = a.reshape(-1, cols)
    ones = np.ones(cols, dtype=np.float32)
    nbytes = a.nbytes

    def t_gemv():
        t = time.perf_counter()
        a2 @ ones
        return time.perf_counter() - t

    def t_reduce():
        if threads <= 1:
            t = time.perf_counter()
            np.add.reduce(a)
            return time.perf_counter() - t
        parts = np.array_split(a, threads)
        ths = [threading.Thread(target=np.add.reduce, args=(p,)) for p in parts]
        t = time.perf_counter()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        return time.perf_counter() - t

    out = {"bytes": nbytes}
    for name, fn in (("sgemv", t_gemv), ("reduce", t_reduce)):
        fn()  # warm-up
        best = min(fn() for _ in range(reps))
        out[f"{name}_gbs"] = nbytes / best / 1e9
    out["gbs"] = max(out["sgemv_gbs"], out["reduce_gbs"])
    return out


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

def _run_worker(kind: str, threads: int, **kw) -> dict:
    env = dict(os.environ)
    for v in _THREAD_VARS:
        env[v] = str(threads)
    cmd = [sys.executable, "-m", "bench.roof", "--worker", kind, "--threads", str(threads),
           "--worker-args", json.dumps(kw)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"roof worker {kind} failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(threads: int | None = None, mem_mb: int = 512, gemm_size: int = 2048,
            reps: int = 5, verbose: bool = False) -> dict:
    """Measure the roofs at 1 thread and at ``threads`` (default: all cores).

    Returns a dict with ``sgemm_gflops`` and ``read_gbs``, each a mapping
    from thread count (int) to the measured figure, plus details.
    """
    all_t = threads or os.cpu_count() or 1
    counts = sorted({1, all_t})
    res = {"cpu": cpu_name(), "ncpu": os.cpu_count(), "threads": counts,
           "sgemm_gflops": {}, "read_gbs": {}, "details": {}}
    for t in counts:
        g = _run_worker("sgemm", t, size=gemm_size, reps=reps)
        m = _run_worker("read", t, mem_mb=mem_mb, reps=reps)
        res["sgemm_gflops"][t] = g["gflops"]
        res["read_gbs"][t] = m["gbs"]
        res["details"][t] = {"sgemm": g, "read": m}
        if verbose:
            print(f"threads={t}: sgemm {g['gflops']:.1f} GFLOP/s, read {m['gbs']:.1f} GB/s "
                  f"(sgemv {m['sgemv_gbs']:.1f}, reduce {m['reduce_gbs']:.1f})", file=sys.stderr)
    return res


def load(path: str) -> dict:
    """Load a roof JSON written by ``--json`` (thread-count keys back to int)."""
    with open(path) as f:
        r = json.load(f)
    for key in ("sgemm_gflops", "read_gbs", "details"):
        r[key] = {int(k): v for k, v in r.get(key, {}).items()}
    return r


def lookup(table: dict, threads: int):
    """Figure for ``threads``, else the nearest measured thread count."""
    if not table:
        return None
    if threads in table:
        return table[threads]
    return table[min(table, key=lambda t: abs(t - threads))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="all-core thread count")
    ap.add_argument("--mem-mb", type=int, default=512)
    ap.add_argument("--gemm-size", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        kw = json.loads(args.worker_args)
        fn = {"sgemm": _worker_sgemm, "read": _worker_read}[args.worker]
        print(json.dumps(fn(args.threads or 1, **kw)))
        return 0

    r = measure(args.threads, args.mem_mb, args.gemm_size, args.reps, verbose=True)
    print(f"cpu: {r['cpu']} ({r['ncpu']} logical cpus)")
    print("| threads | sgemm GFLOP/s | read GB/s |")
    print("|---:|---:|---:|")
    for t in r["threads"]:
        print(f"| {t} | {r['sgemm_gflops'][t]:.1f} | {r['read_gbs'][t]:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

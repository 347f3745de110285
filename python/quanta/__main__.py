"""Command line: ``python -m quanta demo | build | search | info``."""
from __future__ import annotations

import argparse
import inspect
import sys
import time

import numpy as np


def _exact_topk(xb, xq, k, metric):
    """Exact float32 top-k in NumPy, in blocks (the ground truth for recall)."""
    if metric == "cosine":
        xb = xb / np.linalg.norm(xb, axis=1, keepdims=True)
        xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    out = np.empty((len(xq), k), np.int64)
    for i in range(0, len(xq), 256):
        s = xq[i:i + 256] @ xb.T
        if metric == "l2":
            s = 2 * s - (xb * xb).sum(1)[None, :]
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
        out[i:i + 256] = np.take_along_axis(part, order, 1)
    return out


def _recall(I, I_true):
    k = I_true.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(I, I_true)]))


def _qps(index, xq, k, threads, repeat=1, **kw):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        index.search(xq, k, threads=threads, **kw)
        best = min(best, time.perf_counter() - t)
    return len(xq) / best


def _demo_rows(n, dim):
    """(label, index, search settings) for every index kind, sized for n vectors of dim."""
    import quanta
    nlist = max(4, int(n ** 0.5))
    flat = [("Flat", "f32", "global"), ("Flat(f16)", "f16", "global"),
            ("Flat(bf16)", "bf16", "global"), ("Flat(f8e4m3)", "f8e4m3", "global"),
            ("Flat(f8e4m3) f8_scale=vector", "f8e4m3", "vector"),
            ("Flat(f8e4m3) f8_scale=none", "f8e4m3", "none"), ("Flat(f8e5m2)", "f8e5m2", "global"),
            ("Flat(i8)", "i8", "global")]
    rows = [(name, quanta.FlatIndex(dim, "ip", storage, f8_scale=scale), {})
            for name, storage, scale in flat]
    specs = [(f"PQ{dim // 8}x8", {}), (f"PQ{dim // 4}x4fs", {}),
             (f"PQ{dim // 4}x4fs,Refine(f16)", {}),
             (f"IVF{nlist},PQ{dim // 4}x4fs,Refine(f16)", {"nprobe": max(1, nlist // 8)}),
             (f"IVF{nlist}(soar),PQ{dim // 4}x4fs,Refine(f16)", {"nprobe": max(1, nlist // 16)}),
             (f"RBE{dim}x2", {}), (f"RBE{dim}x2,Refine(f8e4m3)", {}),
             ("Graph32(f16)", {}), ("Graph32(i8)", {})]
    rows += [(spec, quanta.index_factory(dim, spec), kw) for spec, kw in specs]
    return rows


def cmd_demo(args) -> int:
    import quanta
    from quanta.datasets import clustered

    xb, xq = clustered(args.n, args.dim, args.nq, seed=args.seed)
    print(f"quanta {quanta.__version__} demo: {args.n} clustered vectors, dim {args.dim}, "
          f"{args.nq} queries, k={args.k}, SIMD {quanta.simd_level()}, "
          f"{quanta.get_num_threads()} threads")
    t = time.perf_counter()
    I_true = _exact_topk(xb, xq, args.k, "ip")
    print(f"exact ground truth (NumPy float32): {time.perf_counter() - t:.2f} s\n")
    header = (f"{'index':<36} {'build s':>7} {'bytes/vec':>9} {'recall@10':>9} {'QPS 1 thr':>10} "
              f"{'QPS all':>10} {'1-query QPS':>11}")
    print(header)
    print("-" * len(header))
    sample = xb[:min(len(xb), 20_000)]  # training sample of the quantized kinds
    for name, index, kw in _demo_rows(args.n, args.dim):
        t = time.perf_counter()
        if not index.is_trained:
            index.train(sample)
        index.add(xb)
        build = time.perf_counter() - t
        r = _recall(index.search(xq, args.k, **kw).ids, I_true)
        q1 = _qps(index, xq, args.k, 1, **kw)
        qa = _qps(index, xq, args.k, 0, **kw)
        t = time.perf_counter()
        for q in xq[:50]:
            index.search(q, args.k, threads=1, **kw)
        single = 50 / (time.perf_counter() - t)
        bpv = index.memory_usage / index.ntotal
        print(f"{name:<36} {build:>7.1f} {bpv:>9.0f} {r:>9.4f} {q1:>10.0f} {qa:>10.0f} "
              f"{single:>11.0f}", flush=True)
    return 0


def cmd_build(args) -> int:
    import quanta
    from quanta._progress import Progress
    from quanta.datasets import read_vectors, sample_rows

    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1; got {args.batch}")
    if args.train_size < 1:
        raise ValueError(f"--train-size must be >= 1; got {args.train_size}")
    x = read_vectors(args.input)
    if len(x) == 0:
        raise ValueError(f"{args.input}: no vectors")
    index = quanta.index_factory(x.shape[1], args.spec, metric=args.metric)
    if not index.is_trained:  # a seeded random sample: the file's order may be anything
        rows = sample_rows(len(x), args.train_size, args.seed)
        index.train(np.asarray(x[rows], np.float32))
    bar = Progress(len(x), "adding", enabled=not args.quiet)
    for i in range(0, len(x), args.batch):
        chunk = np.asarray(x[i:i + args.batch], np.float32)
        index.add(chunk, threads=args.threads)
        bar.update(len(chunk))
    index.save(args.output)
    print(f"wrote {args.output}: {index!r}, {index.memory_usage / 2**20:.1f} MiB")
    return 0


def cmd_search(args) -> int:
    import quanta
    from quanta.datasets import read_vectors

    index = quanta.load(args.index, mmap=args.mmap)
    q = np.asarray(read_vectors(args.queries), np.float32)
    kw = {}  # the settings the loaded kind takes; the others are refused by name
    for name in ("nprobe", "width"):
        value = getattr(args, name)
        if value is not None:
            if name not in inspect.signature(index.search).parameters:
                raise ValueError(f"--{name}: a {type(index).__name__} has no {name} setting")
            kw[name] = value
    t = time.perf_counter()
    D, I = index.search(q, args.k, threads=args.threads, **kw)
    dt = time.perf_counter() - t
    print(f"{len(q)} queries in {dt:.3f} s ({len(q) / dt:,.0f} QPS)")
    if args.ground_truth:
        gt = np.load(args.ground_truth)
        if gt.ndim != 2 or gt.shape[0] != len(q) or gt.shape[1] < args.k or gt.dtype.kind not in "iu":
            raise ValueError(f"--ground-truth must hold integer ids of shape ({len(q)}, >= "
                             f"{args.k}); got {gt.dtype} {gt.shape}")
        print(f"recall@{args.k}: {_recall(I, gt[:, :args.k]):.4f}")
    if args.output:
        np.savez(args.output, distances=D, ids=I)
        print(f"wrote {args.output}")
    else:
        for row in I[:5]:
            print(" ".join(map(str, row)))
    return 0


def cmd_info(args) -> int:
    import quanta

    if args.index:
        for key, value in quanta.read_header(args.index).items():
            print(f"{key}: {value}")
    else:
        for key, value in quanta.build_info().items():
            print(f"{key}: {value}")
    return 0


def main(argv=None) -> int:
    from quanta import __version__
    p = argparse.ArgumentParser(prog="python -m quanta", description=__doc__)
    p.add_argument("--version", action="version", version=f"quanta {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="build every index kind on built-in clustered data")
    d.add_argument("--n", type=int, default=100_000, help="database vectors (default 100,000)")
    d.add_argument("--dim", type=int, default=384, help="dimension (default 384)")
    d.add_argument("--nq", type=int, default=1000, help="queries (default 1,000)")
    d.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    d.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    d.set_defaults(fn=cmd_demo)
    b = sub.add_parser("build", help="build an index from a .npy or .fvecs file")
    b.add_argument("input", help="vectors, memory-mapped: .npy, .fvecs / .ivecs / .bvecs, "
                   ".fbin / .ibin / .u8bin / .i8bin")
    b.add_argument("-o", "--output", required=True, help="the index file to write")
    b.add_argument("--spec", default="Flat", help="index spec, e.g. 'Flat(f8e4m3)', "
                   "'IVF1024,PQ64x4fs,Refine(f16)', 'Graph32(f16)' (see quanta.index_factory)")
    b.add_argument("--metric", default="ip", choices=["ip", "l2", "cosine"],
                   help="default ip (inner product)")
    b.add_argument("--batch", type=int, default=65536, help="vectors added per call")
    b.add_argument("--threads", type=int, default=0, help="0 (default): all cores")
    b.add_argument("--train-size", type=int, default=100_000,
                   help="vectors in the random training sample of the kinds that train")
    b.add_argument("--seed", type=int, default=0, help="seed of the training sample")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=cmd_build)
    s = sub.add_parser("search", help="search a saved index with queries from a file")
    s.add_argument("index", help="a file written by index.save() or 'quanta build'")
    s.add_argument("queries", help="query vectors, in any format build reads")
    s.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--threads", type=int, default=0, help="0 (default): all cores")
    s.add_argument("--mmap", action="store_true", help="memory-map the index file")
    s.add_argument("--nprobe", type=int, help="IVF indexes: inverted lists visited per query")
    s.add_argument("--width", type=int, help="graph indexes: the search beam")
    s.add_argument("--ground-truth", help=".npy of true ids (nq, >=k) to report recall")
    s.add_argument("-o", "--output", help="write distances and ids to this .npz")
    s.set_defaults(fn=cmd_search)
    i = sub.add_parser("info", help="build info, or the header of a saved index")
    i.add_argument("index", nargs="?", help="a saved index (omitted: this build's info)")
    i.set_defaults(fn=cmd_info)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

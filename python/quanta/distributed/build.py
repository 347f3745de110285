"""build_sharded: train once on a sample, then build every shard from that trained state.

The trained, empty index is pickled once (a few megabytes at most: codebooks, centroids,
scales, an encoder) and every shard task unpickles its own copy, adds its rows with their
global ids and saves its shard; scores from the shards are then comparable. The manifest is
written last, so a failed build never leaves a folder that opens as a smaller index.
"""
from __future__ import annotations

import os
import pickle
import secrets
import time

import numpy as np

from .._progress import Progress
from ..factory import index_factory
from ..io import read_header
from ..multivector import MultiVectorIndex
from ..sparse import SparseIndex
from .sharded import MANIFEST, ShardedIndex, ShardError, _FORMAT, write_manifest
from .sources import Part, as_source, batches

_BACKENDS = ("ray", "local")


def family_of(index) -> str:
    if isinstance(index, SparseIndex):
        return "sparse"
    if isinstance(index, MultiVectorIndex):
        return "multivector"
    return "dense"


def build_shard(index, data, start, rows, ids, path, threads, batch_size, share=1.0):
    """Adds one part's rows to `index` (a trained, empty copy) and saves it to `path`; runs
    in a Ray worker or in this process. Returns what the manifest records. share: the part's
    fraction of all rows; a SparseIndex keeps that share of its posting budget."""
    t0 = time.perf_counter()
    if isinstance(index, SparseIndex):
        index.params["n_postings"] = max(1, round(index.params["n_postings"] * share))
    multi = isinstance(index, MultiVectorIndex)
    for x, labels in batches(Part(data, start, rows, ids), batch_size,
                             getattr(index, "vocabulary", None)):
        if multi:
            index.add(x[0], x[1], ids=labels, threads=threads)
        else:
            index.add(x, ids=labels, threads=threads)
    index.save(path)
    return {"ntotal": int(index.ntotal), "bytes": os.path.getsize(path),
            "seconds": round(time.perf_counter() - t0, 3)}


def build_sharded(spec_or_index, source, n_shards: int, out_dir, *, metric: str = "ip",
                  ids=None, column: str | None = None, id_column: str | None = None,
                  train_size: int = 100_000, seed: int = 0, backend: str = "ray",
                  cpus_per_shard: float = 1, threads: int | None = None,
                  batch_size: int = 1 << 18, max_retries: int = 3, overwrite: bool = False,
                  progress: bool | None = None) -> ShardedIndex:
    """Builds `n_shards` shards of one index from `source` into `out_dir`; returns them
    opened (memory-mapped, searched by this process's threads: ``ShardedIndex.open(out_dir,
    ray=True)`` serves them from Ray actors instead).

    spec_or_index: an ``index_factory`` spec (dense sources; `metric` applies) or an empty
        index, trained or not: any dense index, a ``SparseIndex`` or a ``MultiVectorIndex``.
        A SparseIndex's `n_postings` budgets the whole corpus: each shard keeps its share
        (n_postings x its rows / all rows), so the shards hold the postings one index would
        and search at its recall (bench/results/sharded.md).
    source: dense: a NumPy array or memmap (n, dim), a list of .npy / .fvecs / .fbin files
        (read by the workers: on a cluster, from storage every node sees) or a Ray Dataset
        (`column`: its vector column; `id_column`: its int64 ids). Sparse: a SciPy matrix,
        an (indptr, indices, data) tuple, a list of them, or Seismic .jsonl files (whole
        files per shard, one vocabulary made from all). Multi-vector: a list of token arrays
        or (tokens, offsets).
    ids: int64 ids of the rows (default: global positions 0 .. n-1); shards keep them.
    train_size, seed: an untrained index is trained here on `train_size` rows drawn at
        random with `seed` (dense kinds; sparse and multi-vector indexes need no training).
    backend: "ray" (one Ray task per shard, `cpus_per_shard` CPUs each, retried up to
        `max_retries` times when its worker dies; Ray starts a local cluster when none is
        running) or "local" (the shards one after another in this process).
    threads: per shard's add (default: cpus_per_shard on Ray, every core locally).
    overwrite: replace an index already in `out_dir` (its files go once the new manifest is
        written; a failed build leaves it as it was).
    progress: a bar over shards on stderr (default: when stderr is a terminal).
    """
    if isinstance(n_shards, bool) or not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise ValueError(f"n_shards must be an integer >= 1; got {n_shards!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}; got {backend!r}")
    if not cpus_per_shard > 0:
        raise ValueError(f"cpus_per_shard must be > 0; got {cpus_per_shard!r}")
    out_dir = os.fspath(out_dir)
    if os.path.exists(os.path.join(out_dir, MANIFEST)) and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a sharded index; pass overwrite=True "
                              f"to replace it")
    t0 = time.perf_counter()
    if isinstance(spec_or_index, str):
        src = as_source(source, "dense", ids=ids, column=column, id_column=id_column)
        index = index_factory(src.dim, spec_or_index, metric)
    else:
        index = spec_or_index
        if not hasattr(index, "add") or not hasattr(index, "save"):
            raise TypeError("spec_or_index must be an index_factory spec or a quanta index; "
                            f"got {type(index).__name__}")
        if index.ntotal:
            raise ValueError(f"the index holds {index.ntotal} vectors: pass an empty one "
                             f"(trained or not)")
        src = as_source(source, family_of(index), ids=ids, column=column,
                        id_column=id_column, dim=getattr(index, "dim", None))
        if src.kind == "dense" and src.dim != index.dim:
            raise ValueError(f"source has dim {src.dim} but the index has dim {index.dim}")
    if n_shards > src.n:
        raise ValueError(f"n_shards={n_shards} is more than the source's {src.n} rows")
    if src.kind == "dense" and not getattr(index, "is_trained", True):
        index.train(src.sample(int(train_size), int(seed)))
    src.prepare(index)
    train_seconds = time.perf_counter() - t0

    os.makedirs(out_dir, exist_ok=True)
    tag = secrets.token_hex(4)  # new files never overwrite the shards of an index in place
    files = [f"shard-{i:05d}-{tag}.qnt" for i in range(n_shards)]
    paths = [os.path.join(out_dir, f) for f in files]
    parts = src.parts(n_shards)
    # the trained, empty index itself: its coarse step serves every shard's search (IVF), and
    # it starts any shard added later
    trained = f"trained-{tag}.qnt"
    written = paths + [os.path.join(out_dir, trained)]
    bar = Progress(n_shards, "build_sharded", progress is not False)
    try:
        index.save(written[-1])
        if backend == "ray":
            stats = _run_ray(index, parts, src.n, paths, threads or max(1, int(cpus_per_shard)),
                             batch_size, cpus_per_shard, max_retries, bar)
        else:
            blob = pickle.dumps(index)
            stats = []
            for part, path in zip(parts, paths):
                stats.append(build_shard(pickle.loads(blob), *part, path, threads or 0,
                                         batch_size, part.rows / src.n))
                bar.update(1)
    except BaseException:
        for p in written:
            if os.path.exists(p):
                os.unlink(p)
        raise
    old = _index_files(out_dir)
    manifest = {
        "format": _FORMAT, "kind": read_header(paths[0])["kind"], "family": src.kind,
        "dim": int(index.dim), "metric": getattr(index, "metric", "ip"),
        "ntotal": sum(s["ntotal"] for s in stats), "index": repr(index), "trained": trained,
        "shards": [{"file": f, "first_row": p.start, "rows": p.rows, **s}
                   for f, p, s in zip(files, parts, stats)],
        "build": {"backend": backend, "train_seconds": round(train_seconds, 3),
                  "seconds": round(time.perf_counter() - t0, 3)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_manifest(out_dir, manifest)
    for f in old - set(files) - {trained}:  # the replaced index's files
        os.unlink(os.path.join(out_dir, f))
    return ShardedIndex.open(out_dir)


def _index_files(out_dir) -> set:
    return {f for f in os.listdir(out_dir)
            if f.startswith(("shard-", "trained-")) and f.endswith(".qnt")}


def _run_ray(index, parts, total, paths, threads, batch_size, cpus, max_retries, bar):
    try:
        import ray
    except ImportError:
        raise ImportError("backend='ray' needs Ray: pip install 'quanta[ray]' (or pass "
                          "backend='local')") from None
    # Sparse and multi-vector builds peak far above what they keep: max_calls=1 ends the
    # worker with its task, so that memory goes back to the node (measured before the sparse
    # build freed its pieces: 10 GB held after a 1M sparse shard, and the next build on that
    # node killed for memory). Dense builds reuse their workers: a fresh worker costs about
    # 1 s per task (1M IVF-PQ vectors on two workers: 1.46-1.53x one worker, 1.49-1.81x
    # reusing them; bench/results/sharded.md).
    task = ray.remote(max_calls=0 if family_of(index) == "dense" else 1)(build_shard).options(
        num_cpus=cpus, max_retries=max_retries)
    index_ref = ray.put(index)  # pickled once, shared by every task
    refs = []
    for part, path in zip(parts, paths):
        data = ray.put(np.ascontiguousarray(part.data)) if isinstance(part.data, np.ndarray) \
            else part.data  # a memmap's slice is read here, one shard at a time
        refs.append(task.remote(index_ref, data, part.start, part.rows, part.ids, path, threads,
                                batch_size, part.rows / total))
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # raises at once when a shard failed
            bar.update(1)
        return ray.get(refs)
    except ray.exceptions.RayError as e:
        for r in pending:
            ray.cancel(r)
        # let cancelled tasks end before the caller removes the files (none written after)
        ray.wait(pending, num_returns=len(pending), timeout=60)
        i = next(i for i, r in enumerate(refs) if r in done)
        cause = e.as_instanceof_cause() if isinstance(e, ray.exceptions.RayTaskError) else e
        if isinstance(cause, (ValueError, TypeError)):
            raise cause from None
        raise ShardError(f"shard {i} ({paths[i]}) could not be built after {max_retries} "
                         f"retries: {type(cause).__name__}: {cause}") from None

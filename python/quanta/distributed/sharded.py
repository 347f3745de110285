"""ShardedIndex: the shards ``build_sharded`` wrote, searched as one index.

The shards live in this process (memory-mapped, searched by threads) or in Ray actors, one
per shard (each maps its own shard file: on a cluster the files sit on storage every node
reads). A search sends the queries to every shard, merges each query's hits by score and
raises ``ShardError`` naming the shard when any shard fails: a result never comes from
fewer shards than the index has.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _core
from .._rwlock import guarded
from .._validate import as_k, as_threads
from ..flat import RangeResult, SearchResult
from ..io import FormatError, atomic_write, load, read_header, verify as verify_file
from ..pq import searchable_together
from .._merge import merge_ranges, merge_topk

MANIFEST = "quanta-shards.json"
_FORMAT = 1


class ShardError(RuntimeError):
    """A shard could not be loaded or did not answer; the message names it."""


def write_manifest(out_dir, manifest: dict) -> None:
    atomic_write(os.path.join(out_dir, MANIFEST),
                 lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def read_manifest(out_dir) -> dict:
    path = os.path.join(os.fspath(out_dir), MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{out_dir}: no {MANIFEST}; not a folder written by "
                                f"quanta.distributed.build_sharded") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not a valid shard manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT or \
            not isinstance(manifest.get("shards"), list) or not manifest["shards"]:
        raise FormatError(f"{path}: not a valid shard manifest (format {_FORMAT} with shards)")
    return manifest


def _check_shard(out_dir, i, entry, manifest, verify):
    """The shard file's path, after checking it exists, has the recorded size and a header
    of the manifest's kind and dimension (and, with verify, every checksum)."""
    path = os.path.join(out_dir, entry["file"])
    name = f"shard {i} ({path})"
    if not os.path.exists(path):
        raise ShardError(f"{name} is missing")
    if os.path.getsize(path) != entry["bytes"]:
        raise ShardError(f"{name} has {os.path.getsize(path)} bytes, the manifest says "
                         f"{entry['bytes']}: truncated or replaced")
    try:
        head = verify_file(path) if verify else read_header(path)
    except (FormatError, OSError) as e:
        raise ShardError(f"{name} is corrupt: {e}") from None
    if head["kind"] != manifest["kind"] or head["dim"] != manifest["dim"]:
        raise ShardError(f"{name} holds a {head['kind']} index of dim {head['dim']}, the "
                         f"manifest says {manifest['kind']} of dim {manifest['dim']}")
    return path


def _invoke(index, method, args, kw):
    """index.method(*args, **kw), or the attribute's value when it is a property."""
    attr = getattr(index, method)
    return attr(*args, **kw) if callable(attr) else attr


def _check_vectors(vectors, manifest):
    if manifest["family"] != "dense":
        raise ValueError("vectors: an exact re-rank is for dense indexes")
    if getattr(vectors, "ndim", 0) != 2 or vectors.shape[1] != manifest["dim"]:
        raise ValueError(f"vectors must be a 2-D array (n, {manifest['dim']}); got "
                         f"{getattr(vectors, 'shape', type(vectors).__name__)}")


def _load(path, name, mmap):
    try:
        return load(path, mmap=mmap)
    except (FormatError, OSError) as e:
        raise ShardError(f"{name} could not be loaded: {e}") from None


class _LocalShards:
    """The shards in this process, called from a thread pool (the native searches release
    the GIL, so shards run in parallel)."""

    def __init__(self, paths, mmap):
        self.indexes = [_load(p, f"shard {i} ({p})", mmap) for i, p in enumerate(paths)]
        # fast-scan IVF-PQ shards (no OPQ, no re-ranking) are searched as one index: every
        # probed list in every shard under one heap per query (IVFPQIndex.search_together)
        self.together = len(self.indexes) > 1 and all(map(searchable_together, self.indexes))

    def search_together(self, queries, k, threads, nprobe):
        first, *rest = self.indexes
        return first.search_together(rest, queries, k, nprobe=nprobe, threads=threads)

    def call(self, method, args, kw, threads):
        n = len(self.indexes)
        threads = threads or _core.default_threads()
        workers = 1  # reading a size or removing ids: one shard after another
        if "threads" in kw:  # searches: the threads shared among the shards
            workers = max(1, min(n, threads))
            kw = {**kw, "threads": max(1, threads // workers)}

        def run(i):
            try:
                return _invoke(self.indexes[i], method, args, kw)
            except (ValueError, TypeError):
                raise  # the caller's mistake (the same on every shard): as a single index
            except Exception as e:
                raise ShardError(f"shard {i} failed in {method}: {type(e).__name__}: {e}") from e
        if workers == 1:
            return [run(i) for i in range(n)]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(run, range(n)))

    def close(self):
        self.indexes = []


class _Stale(tuple):
    """An actor's answer when it restarted (Ray reloaded its shard file) and has not yet
    seen this session's removals: (removals applied,)."""


class ShardActor:
    """One shard in a Ray actor: loads its file and serves calls on it. ``edits`` counts the
    removals since the file was written, so a restarted actor is brought up to date."""

    def __init__(self, path, mmap, threads):
        self.index, self.edits, self.threads = load(path, mmap=mmap), 0, threads

    def run(self, edits, method, kw, *args):  # args top-level: Ray resolves their refs
        if edits != self.edits:
            return _Stale((self.edits,))
        if "threads" in kw:
            kw = {**kw, "threads": self.threads}
        if "coarse" in kw:  # put once by the caller for every actor
            import ray
            kw = {**kw, "coarse": ray.get(kw["coarse"])}
        out = _invoke(self.index, method, args, kw)
        if method == "remove":
            self.edits += 1
        return out

    def catch_up(self, start, removals):
        for f in removals[self.edits - start:]:
            self.index.remove(f)
            self.edits += 1

    def save(self, path):
        self.index.save(path)
        self.edits = 0
        return os.path.getsize(path), int(self.index.ntotal)


class _RayShards:
    """One Ray actor per shard. Ray restarts a dead actor (it loads its file again) and
    retries the call; when that fails too, the call raises ShardError."""

    def __init__(self, paths, mmap, cpus_per_shard, options):
        import ray
        self.ray = ray
        if cpus_per_shard is None:  # share the cluster's CPUs: every actor must be placed
            total = ray.cluster_resources().get("CPU", 1)
            cpus_per_shard = min(1.0, total / len(paths))
        threads = max(1, int(cpus_per_shard))
        opts = {"num_cpus": cpus_per_shard, "max_restarts": 2, "max_task_retries": 2,
                "scheduling_strategy": "SPREAD", **(options or {})}
        cls = ray.remote(ShardActor).options(**opts)
        self.paths = paths
        self.actors = [cls.remote(p, mmap, threads) for p in paths]
        self.removals = []  # since the files were written: replayed into restarted actors
        self._get([a.__ray_ready__.remote() for a in self.actors], "load")

    def _get(self, refs, what):
        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                if isinstance(cause, (ValueError, TypeError)):
                    raise cause from None
                raise ShardError(f"shard {i} ({self.paths[i]}) failed in {what}: {cause}") \
                    from None
            except self.ray.exceptions.RayError as e:
                raise ShardError(f"shard {i} ({self.paths[i]}) did not answer {what}: "
                                 f"{type(e).__name__}: {e}") from None
        return out

    def call(self, method, args, kw, threads):
        if method in ("search", "range_search"):  # large queries: put once, not per actor
            args = tuple(self.ray.put(a) if isinstance(a, np.ndarray) and a.nbytes > 1 << 16
                         else a for a in args)
            if "coarse" in kw:
                kw = {**kw, "coarse": self.ray.put(kw["coarse"])}
        n = len(self.removals)
        out = self._get([a.run.remote(n, method, kw, *args) for a in self.actors], method)
        for i, v in enumerate(out):
            if isinstance(v, _Stale):
                self._get([self.actors[i].catch_up.remote(v[0], self.removals[v[0]:])],
                          "remove")
                out[i] = self._get([self.actors[i].run.remote(n, method, kw, *args)], method)[0]
        if method == "remove":
            self.removals.append(args[0])
        return out

    def save(self, paths):
        out = self._get([a.save.remote(p) for a, p in zip(self.actors, paths)], "save")
        self.removals = []
        return out

    def close(self):
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []


@guarded
class ShardedIndex:
    """Shards of one index (``quanta.distributed.build_sharded``) searched as one.

    ``search`` / ``range_search`` send the queries to every shard and merge the hits by
    score; every keyword a shard's own ``search`` takes (``nprobe``, ``width``,
    ``query_cut``, ``candidates``, ...) is passed on. Ids are the global ids given at build
    time, so filters, ``remove`` and ``contains`` use them. ``save()`` writes changed shards
    back (removals are otherwise kept in memory only, as for a memory-mapped index).
    """

    def __init__(self, out_dir, manifest, backend, paths, trained, vectors):
        self.path, self.manifest, self._backend = os.fspath(out_dir), manifest, backend
        self._paths, self._trained, self.vectors = paths, trained, vectors

    @classmethod
    def open(cls, out_dir, *, mmap: bool = True, ray: bool = False, verify: bool = False,
             cpus_per_shard: float | None = None, actor_options: dict | None = None,
             vectors=None) -> "ShardedIndex":
        """Opens the shards in `out_dir`.

        mmap: each shard is memory-mapped (``quanta.load(mmap=True)``); False reads them.
        ray: serve each shard from a Ray actor (on a cluster: the actors spread over the
            nodes, each needing about its shard's memory_usage of RAM, or less when mapped
            pages stay on disk), instead of this process's threads.
        verify: check every shard's checksums first (reads every file; see quanta.verify).
        cpus_per_shard, actor_options: the actors' Ray resources (default: one CPU each, or
            the cluster's CPUs shared when there are fewer) and any other ``.options()``.
        vectors: the original vectors (array or memmap, row i = id i) for an exact re-rank
            of the merged candidates (``search(..., rerank_factor=)``).
        """
        out_dir = os.fspath(out_dir)
        manifest = read_manifest(out_dir)
        if vectors is not None:
            _check_vectors(vectors, manifest)
        paths = [_check_shard(out_dir, i, e, manifest, verify)
                 for i, e in enumerate(manifest["shards"])]
        # the trained, empty index: one coarse step for every shard of an IVF index
        trained = None
        if manifest.get("trained"):
            path = os.path.join(out_dir, manifest["trained"])
            trained = _load(path, f"the trained index ({path})", mmap)
        if ray:
            try:
                import ray as _ray  # noqa: F401
            except ImportError:
                raise ImportError("ray=True needs Ray: pip install 'quanta[ray]'") from None
            backend = _RayShards(paths, mmap, cpus_per_shard, actor_options)
        else:
            backend = _LocalShards(paths, mmap)
        return cls(out_dir, manifest, backend, paths, trained, vectors)

    # -- what the manifest says -------------------------------------------------------------
    kind = property(lambda self: self.manifest["kind"], doc="the shards' index kind (fourcc)")
    dim = property(lambda self: self.manifest["dim"])
    metric = property(lambda self: self.manifest["metric"])
    n_shards = property(lambda self: len(self.manifest["shards"]))
    higher_is_better = property(lambda self: self.manifest["metric"] != "l2")

    @property
    def ntotal(self) -> int:
        """Vectors (documents) held by all shards, removed ones excluded."""
        return int(sum(self._backend.call("ntotal", (), {}, 0)))

    def __len__(self) -> int:
        return self.ntotal

    @property
    def shard_sizes(self) -> list:
        return [int(n) for n in self._backend.call("ntotal", (), {}, 0)]

    @property
    def memory_usage(self) -> int:
        """Bytes the shards hold (mapped arrays included)."""
        return int(sum(self._backend.call("memory_usage", (), {}, 0)))

    def __repr__(self) -> str:
        where = "ray actors" if isinstance(self._backend, _RayShards) else "this process"
        return (f"ShardedIndex({self.path!r}, kind={self.kind!r}, dim={self.dim}, "
                f"metric={self.metric!r}, shards={self.n_shards} in {where})")

    # -- queries ----------------------------------------------------------------------------
    def _query_args(self, queries):
        if self.manifest["family"] == "multivector" and isinstance(queries, tuple):
            return queries  # (tokens, offsets)
        return (queries,)

    def search(self, queries, k: int = 10, *, threads: int = 0, filter=None,
               rerank_factor: int = 0, **params) -> SearchResult:
        """The k best of each query over every shard, best first (see the shard kind's
        ``search`` for `params`). threads: all cores by default, shared among the shards.
        rerank_factor > 0 (needs ``open(vectors=)``): each shard returns k * rerank_factor
        candidates, and the merged ones are scored exactly against the original vectors."""
        k, threads = as_k(k), as_threads(threads)
        if rerank_factor and self.vectors is None:
            raise ValueError("rerank_factor needs the original vectors: "
                             "ShardedIndex.open(..., vectors=)")
        ks = k * rerank_factor if rerank_factor else k
        if filter is None and set(params) <= {"nprobe"} and \
                getattr(self._backend, "together", False):
            D, I = self._backend.search_together(queries, ks, threads, params.get("nprobe"))
        else:
            kw = {"k": ks, "threads": threads, "filter": filter, **params}
            if hasattr(self._trained, "coarse_search") and "coarse" not in params:
                # the shards share the trained centroids: one coarse step, not one per shard
                kw["coarse"] = tuple(self._trained.coarse_search(
                    queries, params.get("nprobe"), threads=threads))
                kw.pop("nprobe", None)
            parts = self._backend.call("search", self._query_args(queries), kw, threads)
            D, I = merge_topk([p[0] for p in parts], [p[1] for p in parts], ks,
                              self.higher_is_better)
        if rerank_factor:
            return self._rerank(queries, D, I, k)
        return SearchResult(D, I)

    def _rerank(self, queries, D, I, k):
        q = np.asarray(queries, np.float32).reshape(len(D), -1)
        X = np.asarray(self.vectors[np.maximum(I, 0).ravel()], np.float32).reshape(
            *I.shape, self.dim)
        if self.metric == "l2":
            exact = ((X - q[:, None, :]) ** 2).sum(-1)
        else:
            exact = np.einsum("qcd,qd->qc", X, q)
            if self.metric == "cosine":
                exact /= np.maximum(np.linalg.norm(X, axis=-1), 1e-30) * \
                    np.maximum(np.linalg.norm(q, axis=1), 1e-30)[:, None]
        worst = -np.inf if self.higher_is_better else np.inf
        exact = np.where(I < 0, worst, exact)
        return SearchResult(*merge_topk([exact], [I], k, self.higher_is_better))

    def range_search(self, queries, radius: float, *, threads: int = 0, filter=None,
                     **params) -> RangeResult:
        """Every hit within `radius` on every shard (see the shard kind's
        ``range_search``), each query's hits best first."""
        threads = as_threads(threads)
        parts = self._backend.call("range_search", (queries, radius),
                                   {"threads": threads, "filter": filter, **params}, threads)
        nq = len(parts[0].lims) - 1
        return RangeResult(*merge_ranges(parts, nq, self.higher_is_better))

    def contains(self, ids) -> np.ndarray:
        """Whether each id is held by some shard."""
        return np.logical_or.reduce(self._backend.call("contains", (ids,), {}, 0))

    def __contains__(self, id) -> bool:
        return bool(self.contains(id)[0])

    # -- changes ----------------------------------------------------------------------------
    def remove(self, ids) -> int:
        """Removes these ids (array-like or ``quanta.Filter``) from every shard; returns how
        many were held. Kept in memory until ``save()``."""
        if not hasattr(ids, "_recipe"):  # ids: as an array, so one copy goes to the actors
            ids = np.ascontiguousarray(np.atleast_1d(ids))
        return int(sum(self._backend.call("remove", (ids,), {}, 0)))

    def save(self) -> None:
        """Writes every shard back to its file (atomically) and the manifest after them."""
        if isinstance(self._backend, _RayShards):
            saved = self._backend.save(self._paths)
        else:
            saved = []
            for index, path in zip(self._backend.indexes, self._paths):
                index.save(path)
                saved.append((os.path.getsize(path), int(index.ntotal)))
        for entry, (size, n) in zip(self.manifest["shards"], saved):
            entry["bytes"], entry["ntotal"] = size, n
        self.manifest["ntotal"] = sum(n for _, n in saved)
        self.manifest["saved"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_manifest(self.path, self.manifest)

    def close(self) -> None:
        """Releases the shards (Ray actors are ended)."""
        self._backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""Sharded build and search: train once on a sample, build shards in parallel on Ray (or in
this process), search every shard and merge the top-k.

``import quanta`` never imports Ray; this package imports it only when a Ray backend is
used (``pip install 'quanta[ray]'``).

>>> from quanta.distributed import build_sharded, ShardedIndex
>>> sharded = build_sharded("IVF1024,PQ48x4fs,Refine(f16)", "vectors.fbin", 8, "shards/")
>>> D, I = ShardedIndex.open("shards/", ray=True).search(queries, k=10, nprobe=32)
"""
from .build import build_sharded
from .sharded import ShardError, ShardedIndex

__all__ = ["build_sharded", "ShardedIndex", "ShardError"]

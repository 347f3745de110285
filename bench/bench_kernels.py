"""pytest-benchmark micro-benchmarks of the flat-scan kernels, reported in GB/s of codes.

    pytest bench/bench_kernels.py --benchmark-only --benchmark-json=out.json
    QUANTA_BENCH_N=200000 pytest bench/bench_kernels.py --benchmark-only

Each case records GB/s (codes scanned per second) and the recall@10 against exact float32 in
``benchmark.extra_info``, so speed is never reported without accuracy. Sizes come from
QUANTA_BENCH_N (rows, default 100000), QUANTA_BENCH_DIM (384) and QUANTA_BENCH_NQ (256).
"""
import os

import numpy as np
import pytest

import quanta
from quanta.datasets import clustered

N = int(os.environ.get("QUANTA_BENCH_N", 100_000))
DIM = int(os.environ.get("QUANTA_BENCH_DIM", 384))
NQ = int(os.environ.get("QUANTA_BENCH_NQ", 256))


@pytest.fixture(scope="module")
def data():
    xb, xq = clustered(N, DIM, NQ, seed=0)
    s = xq @ xb.T
    truth = np.argsort(-s, axis=1)[:, :10]
    return xb, xq, truth


def _median(benchmark):
    """Median seconds per call; None when timing is off (--benchmark-disable)."""
    return benchmark.stats.stats.median if benchmark.stats else None


def _recall(I, truth):
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, truth)]))


@pytest.mark.parametrize("level", quanta._core.supported_isas())
@pytest.mark.parametrize("storage", quanta.STORAGES)
def test_one_query_scan(benchmark, data, storage, level):
    """One query per call, one thread: a memory-bound scan of every code."""
    xb, xq, truth = data
    index = quanta.FlatIndex(DIM, "ip", storage)
    index.add(xb)
    before = quanta.simd_level()
    quanta.set_simd_level(level)
    try:
        benchmark(index.search, xq[0], 10, threads=1)
        I = np.vstack([index.search(q, 10, threads=1).ids for q in xq[:32]])
    finally:
        quanta.set_simd_level(before)
    benchmark.extra_info.update(level=level, recall_at_10=_recall(I, truth[:32]))
    if _median(benchmark):
        benchmark.extra_info["gb_per_s"] = N * index.code_size / _median(benchmark) / 1e9


@pytest.mark.parametrize("threads", [1, 0])
@pytest.mark.parametrize("storage", quanta.STORAGES)
def test_batched_scan(benchmark, data, storage, threads):
    """A batch of queries per call (the GEMM path); threads=0 is all cores."""
    xb, xq, truth = data
    index = quanta.FlatIndex(DIM, "ip", storage)
    index.add(xb)
    res = benchmark(index.search, xq, 10, threads=threads)
    benchmark.extra_info["recall_at_10"] = _recall(res.ids, truth)
    if _median(benchmark):
        benchmark.extra_info.update(qps=NQ / _median(benchmark),
                                    gflops=2 * N * DIM * NQ / _median(benchmark) / 1e9)


def test_int8_queries_scan(benchmark, data):
    """i8 storage with int8 queries (VNNI where the CPU has it)."""
    xb, xq, truth = data
    index = quanta.FlatIndex(DIM, "ip", "i8")
    index.add(xb)
    benchmark(index.search, xq[0], 10, threads=1, quantize_queries=True)
    I = np.vstack([index.search(q, 10, threads=1, quantize_queries=True).ids for q in xq[:32]])
    benchmark.extra_info["recall_at_10"] = _recall(I, truth[:32])
    if _median(benchmark):
        benchmark.extra_info["gb_per_s"] = N * index.code_size / _median(benchmark) / 1e9

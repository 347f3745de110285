"""Timing helpers shared by the benchmark scripts."""
from __future__ import annotations

import time


def time_once(fn):
    """fn's result and its wall time in seconds."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def best_time(fn, reps: int = 3, min_seconds: float = 0.25):
    """fn's result and its fastest run: one warm-up call, then at least `reps` timed runs and
    at least `min_seconds` in all (a 1000-query batch can take a few ms: one run is noise)."""
    out = fn()
    best, spent, runs = float("inf"), 0.0, 0
    while runs < reps or spent < min_seconds:
        _, s = time_once(fn)
        best, spent, runs = min(best, s), spent + s, runs + 1
    return out, best


def measure(search, xq, gt, threads, recall):
    """(recall, QPS at 1 thread, QPS at `threads`) of search(t) -> ids, best of several runs;
    recall(ids, gt) scores the result."""
    out = {}
    for t in (1, threads):
        ids, s = best_time(lambda: search(t))
        out[t] = (recall(ids, gt), len(xq) / s)
    return out[1][0], out[1][1], out[threads][1]

"""The thread defaults (affinity mask, environment) and the persistent worker pool."""
import faulthandler
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import quanta
from conftest import clustered


def _threads_in_child(env=None, cpus=None):
    code = ("import os, sys\n"
            f"cpus = {cpus!r}\n"
            "if cpus is not None: os.sched_setaffinity(0, cpus)\n"
            "import quanta\n"
            "print(quanta.get_num_threads(), quanta.build_info()['hardware_threads'])\n")
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("QUANTA_NUM_THREADS", "OMP_NUM_THREADS")}
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_default_follows_affinity_mask_and_environment():
    assert _threads_in_child(cpus={0}) == (1, 1)
    assert _threads_in_child({"OMP_NUM_THREADS": "3"}) [0] == 3
    assert _threads_in_child({"QUANTA_NUM_THREADS": "5", "OMP_NUM_THREADS": "3"})[0] == 5
    assert _threads_in_child({"QUANTA_NUM_THREADS": "junk"})[0] == _threads_in_child()[0]


def test_set_num_threads_overrides_and_resets():
    before = quanta.get_num_threads()
    try:
        quanta.set_num_threads(3)
        assert quanta.get_num_threads() == 3
    finally:
        quanta.set_num_threads(0)
    assert quanta.get_num_threads() == before


def test_pool_results_independent_of_threads_and_concurrent_callers():
    xb, xq = clustered(20000, 32, 64, seed=5)
    index = quanta.FlatIndex(32, "l2")
    index.add(xb)
    ref = index.search(xq, 10, threads=1)
    for t in (2, 3, 8):  # more workers than cores are fine
        res = index.search(xq, 10, threads=t)
        np.testing.assert_array_equal(res.ids, ref.ids)
    # callers on several Python threads at once: one gets the pool, the others threads of
    # their own; every result matches
    out, errors = {}, []

    def worker(i):
        try:
            out[i] = index.search(xq, 10, threads=4).ids
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors
    for i in range(6):
        np.testing.assert_array_equal(out[i], ref.ids)


def test_pool_survives_fork():
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    xb, xq = clustered(5000, 16, 8, seed=1)
    index = quanta.FlatIndex(16, "l2")
    index.add(xb)
    want = index.search(xq, 5, threads=2).ids  # the pool has started in the parent
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's pool threads are gone; a fresh pool must serve it
        ok = np.array_equal(index.search(xq, 5, threads=2).ids, want)
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == b"1"


@pytest.mark.parametrize("spec", ["Flat", "PQ8x4fs", "IVF8,PQ8x4fs,Refine(f16)", "RBE64x2",
                                  "IVF8,RBE64x2", "Graph16(f16),PQ8x4"])
def test_searches_racing_writers_see_whole_states(spec):
    """Readers share an index, writers (add / remove / compact / reset) run alone: searches
    racing them never fail and return only ids the index held (GraphIndex's search takes the
    lock in its native call)."""
    xb, xq = clustered(4000, 32, 20, seed=5)
    index = quanta.index_factory(32, spec, metric="ip")
    if not index.is_trained:
        index.train(xb)
    index.add(xb[:1000], ids=np.arange(1000))
    errors, stop = [], threading.Event()

    def write():
        try:
            for i in range(1, 4):
                index.add(xb[i * 1000:(i + 1) * 1000], ids=np.arange(i * 1000, (i + 1) * 1000))
                index.remove(np.arange(i * 100, i * 100 + 50))
                index.compact()
            index.reset()
            index.add(xb[:500], ids=np.arange(500))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            stop.set()

    def read():
        try:
            while not stop.is_set():
                ids = index.search(xq, 10, threads=1).ids
                assert ((ids >= -1) & (ids < 4000)).all()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert index.ntotal == 500


def test_index_lock_reentry_writer_preference_and_refused_upgrade():
    """The lock on every index (quanta._rwlock.RWLock): readers share it and may re-enter
    past a waiting writer; a waiting writer holds back new readers; a writer may read and
    write again; a reader asking to write is refused instead of waiting on itself."""
    from quanta._rwlock import RWLock
    faulthandler.dump_traceback_later(60, exit=True)  # a lock that deadlocks fails, not hangs
    lock, events = RWLock(), []
    lock.acquire_read()
    writer_in = threading.Event()

    def writer():
        lock.acquire_write()
        events.append("write")
        writer_in.set()
        lock.release_write()

    w = threading.Thread(target=writer)
    w.start()
    while not w.is_alive():
        pass
    time.sleep(0.2)  # the writer now waits on our read
    assert not writer_in.is_set()
    lock.acquire_read()  # re-entry passes the waiting writer
    lock.release_read()
    other = threading.Thread(target=lambda: (lock.acquire_read(), events.append("read"),
                                             lock.release_read()))
    other.start()
    time.sleep(0.2)
    assert events == []  # a new reader waits behind the writer
    with pytest.raises(RuntimeError, match="inside one of its own searches"):
        lock.acquire_write()
    lock.release_read()
    w.join(10)
    other.join(10)
    assert events == ["write", "read"]
    lock.acquire_write()  # a writer may read and write again
    lock.acquire_read()
    lock.acquire_write()
    lock.release_write()
    lock.release_read()
    lock.release_write()
    with pytest.raises(RuntimeError):
        lock.release_write()
    faulthandler.cancel_dump_traceback_later()


def test_index_changed_from_inside_its_search_is_refused():
    index = quanta.FlatIndex(4, "l2")
    index.add(np.eye(4, dtype=np.float32))

    class Sneaky:
        def __array__(self, dtype=None, copy=None):
            index.add(np.eye(4, dtype=np.float32))  # a write from inside the search
            return np.ones((1, 4), np.float32)

    with pytest.raises(RuntimeError, match="inside one of its own searches"):
        index.search(Sneaky(), 1)
    assert index.ntotal == 4
    index.add(np.eye(4, dtype=np.float32))  # the lock was released by the failed search
    assert index.ntotal == 8

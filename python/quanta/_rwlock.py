"""One writer or many readers per index: searches run together (the native code releases the
GIL), while add / train / reset / remove / compact wait for them and run alone, so a search
never reads arrays that a writer is moving. A thread that holds the lock may call the index
again (a writer may read and write; a reader may read), and waiting writers hold back new
readers so they are not starved."""
from __future__ import annotations

import functools
import threading


class RWLock:
    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0     # read holds, re-entries included
        self._writer = None   # the writing thread
        self._writes = 0      # its re-entries
        self._waiting = 0     # writers waiting
        self._mine = threading.local()  # this thread's read holds

    def acquire_read(self) -> None:
        me, held = threading.get_ident(), getattr(self._mine, "n", 0)
        with self._cond:
            if self._writer != me and not held:
                while self._writer is not None or self._waiting:
                    self._cond.wait()
            self._readers += 1
        self._mine.n = held + 1

    def release_read(self) -> None:
        self._mine.n -= 1
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writes += 1
                return
            if getattr(self._mine, "n", 0):
                raise RuntimeError("an index was changed from inside one of its own searches")
            self._waiting += 1
            while self._writer is not None or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer, self._writes = me, 1

    def release_write(self) -> None:
        with self._cond:
            self._writes -= 1
            if self._writes == 0:
                self._writer = None
                self._cond.notify_all()


_CREATE = threading.Lock()


def _lock_of(obj) -> RWLock:
    lock = obj.__dict__.get("_rwlock")
    if lock is None:
        with _CREATE:
            lock = obj.__dict__.setdefault("_rwlock", RWLock())
    return lock


def _wrap(fn, acquire, release):
    @functools.wraps(fn)
    def guarded(self, *args, **kwargs):
        lock = _lock_of(self)
        getattr(lock, acquire)()
        try:
            return fn(self, *args, **kwargs)
        finally:
            getattr(lock, release)()
    return guarded


READERS = ("search", "range_search", "reconstruct", "contains", "rerank", "to_bytes", "save")
WRITERS = ("add", "train", "reset", "remove", "compact")


def guarded(cls):
    """Class decorator: the class's reading and writing methods (those it has of READERS and
    WRITERS) take its instance's lock."""
    for names, acquire, release in ((READERS, "acquire_read", "release_read"),
                                    (WRITERS, "acquire_write", "release_write")):
        for name in names:
            fn = getattr(cls, name, None)
            if fn is not None:
                setattr(cls, name, _wrap(fn, acquire, release))
    return cls

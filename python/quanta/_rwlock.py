"""One writer or many readers per index: searches run together (the native code releases the
GIL), while add / train / reset / remove / compact wait for them and run alone, so a search
never reads arrays that a writer is moving. A thread that holds the lock may call the index
again (a writer may read and write; a reader may read), and waiting writers hold back new
readers so they are not starved. A failed train() leaves the index as it was."""
from __future__ import annotations

import functools
import threading

from .io import from_bytes


class RWLock:
    def __init__(self):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._readers = 0     # read holds, re-entries included
        self._writer = None   # the writing thread
        self._writes = 0      # its re-entries
        self._waiting = 0     # writers waiting
        self._mine = threading.local()  # this thread's read holds

    # The read path takes the plain lock directly (not `with` the Condition): a search of one
    # query pays for this twice, and the Condition's Python-level methods cost microseconds.
    def acquire_read(self) -> None:
        mine = self._mine
        held = getattr(mine, "n", 0)
        self._lock.acquire()
        try:
            if not held and (self._writer is not None or self._waiting) \
                    and self._writer != threading.get_ident():
                while self._writer is not None or self._waiting:
                    self._cond.wait()
            self._readers += 1
        finally:
            self._lock.release()
        mine.n = held + 1

    def release_read(self) -> None:
        self._mine.n -= 1
        self._lock.acquire()
        self._readers -= 1
        if self._readers == 0 and self._waiting:
            self._cond.notify_all()
        self._lock.release()

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
        lock = self.__dict__.get("_rwlock") or _lock_of(self)
        acquire(lock)
        try:
            return fn(self, *args, **kwargs)
        finally:
            release(lock)
    return guarded


READERS = ("search", "range_search", "reconstruct", "contains", "rerank", "to_bytes", "save")
WRITERS = ("add", "train", "reset", "remove", "compact")


def _all_or_nothing(train):
    """train() either completes or leaves the index as it was: the state of an empty index
    (small: train refuses populated ones) is kept as bytes and put back on any failure."""
    @functools.wraps(train)
    def wrapper(self, *args, **kwargs):
        before = self.to_bytes() if self.ntotal == 0 else None
        try:
            return train(self, *args, **kwargs)
        except BaseException:
            if before is not None:
                lock = self.__dict__["_rwlock"]
                self.__dict__.clear()
                self.__dict__.update(from_bytes(before).__dict__, _rwlock=lock)
            raise
    return wrapper


def guarded(cls):
    """Class decorator: the class's reading and writing methods (those it has of READERS and
    WRITERS) take its instance's lock; train() is all or nothing."""
    if hasattr(cls, "train"):
        cls.train = _all_or_nothing(cls.train)
    for names, acquire, release in ((READERS, RWLock.acquire_read, RWLock.release_read),
                                    (WRITERS, RWLock.acquire_write, RWLock.release_write)):
        for name in names:
            fn = getattr(cls, name, None)
            if fn is not None:
                setattr(cls, name, _wrap(fn, acquire, release))
    return cls

"""One writer or many readers per index: searches run together (the native code releases the
GIL), while add / train / reset / remove / compact wait for them and run alone, so a search
never reads arrays that a writer is moving. A thread that holds the lock may call the index
again (a writer may read and write; a reader may read), and waiting writers hold back new
readers so they are not starved. A failed train() leaves the index as it was."""
from __future__ import annotations

import functools
import threading

from . import _core
from .io import from_bytes

RWLock = _core.RWLock  # native: 0.18 us an acquire / release pair, 0.45 us in Python


_CREATE = threading.Lock()


def lock_of(obj) -> RWLock:
    lock = obj.__dict__.get("_rwlock")
    if lock is None:
        with _CREATE:
            lock = obj.__dict__.setdefault("_rwlock", RWLock())
    return lock


def _wrap(fn, acquire, release):
    @functools.wraps(fn)
    def guarded(self, *args, **kwargs):
        lock = self.__dict__.get("_rwlock") or lock_of(self)
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
    WRITERS) take its instance's lock; train() is all or nothing. Methods named in the
    class's ``locked_natively`` pass ``lock_of(self)`` to a native call that holds it (a
    search of one query saves the wrapper's half microsecond)."""
    if hasattr(cls, "train"):
        cls.train = _all_or_nothing(cls.train)
    natively = getattr(cls, "locked_natively", ())
    for names, acquire, release in ((READERS, RWLock.acquire_read, RWLock.release_read),
                                    (WRITERS, RWLock.acquire_write, RWLock.release_write)):
        for name in names:
            fn = getattr(cls, name, None)
            if fn is not None and name not in natively:
                setattr(cls, name, _wrap(fn, acquire, release))
    return cls

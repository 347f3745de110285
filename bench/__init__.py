"""Benchmark harness for quanta: exact (flat) search over compact storages.

Modules:
  bench.datasets          synthetic clustered data, cached real text embeddings,
                          exact ground truth and recall@k
  bench.build_embeddings  rebuild the real-embedding cache (GCIDE definitions
                          embedded with all-MiniLM-L6-v2, offline)
  bench.roof              machine roofs: sgemm GFLOP/s and memory read GB/s
  bench.adapters          one adapter per system (numpy, faiss, usearch, quanta)
  bench.flat              the flat-search benchmark table
"""

"""Writes a synthetic raw-count h5ad of N cells over the scFoundation gene names (CSR, float32 counts),
written in row chunks so memory stays small: input for the streaming-memory measurement
(docs/experiments/stream_memory.sh). Usage: synthetic_h5ad.py GENE_INDEX_TSV N_CELLS NNZ_PER_CELL OUT SEED"""
import sys

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

genes_tsv, n, nnz, out, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
genes = pd.read_csv(genes_tsv, sep="\t")["gene_name"].astype(str).tolist()
g = len(genes)
rng = np.random.default_rng(seed)
# An empty frame of the right shape first, then X replaced by a CSR group written in chunks.
a = ad.AnnData(
    X=sp.csr_matrix((n, g), dtype=np.float32),
    obs=pd.DataFrame(index=[f"cell{i}" for i in range(n)]),
    var=pd.DataFrame(index=genes),
)
a.write_h5ad(out)
with h5py.File(out, "r+") as f:
    del f["X"]
    x = f.create_group("X")
    x.attrs["encoding-type"] = "csr_matrix"
    x.attrs["encoding-version"] = "0.1.0"
    x.attrs["shape"] = np.array([n, g], dtype=np.int64)
    data = x.create_dataset("data", shape=(n * nnz,), dtype=np.float32, chunks=True)
    idx = x.create_dataset("indices", shape=(n * nnz,), dtype=np.int32, chunks=True)
    x.create_dataset("indptr", data=np.arange(0, n * nnz + 1, nnz, dtype=np.int64))
    step = 10_000
    for s in range(0, n, step):
        k = min(step, n - s)
        # nnz distinct genes per cell: a random offset walk keeps them sorted and distinct.
        gaps = rng.integers(1, 2 * (g // nnz), size=(k, nnz))
        cols = np.cumsum(gaps, axis=1) - 1
        cols = np.minimum(cols, g - nnz + np.arange(nnz))
        counts = 1 + rng.geometric(0.4, size=(k, nnz)).astype(np.float32)
        data[s * nnz:(s + k) * nnz] = counts.ravel()
        idx[s * nnz:(s + k) * nnz] = cols.astype(np.int32).ravel()
print(f"{out}: {n} cells x {g} genes, {nnz} expressed per cell")

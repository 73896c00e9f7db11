"""Stratified, seeded 70/30 split of the 10x PBMC3k h5ad by obs['celltype'] (raw counts kept)."""
import sys

import anndata as ad
import numpy as np

src, train_out, test_out = sys.argv[1:4]
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
a = ad.read_h5ad(src)
labels = a.obs["celltype"].astype(str).to_numpy()
rng = np.random.default_rng(seed)
train = np.zeros(a.n_obs, dtype=bool)
for c in sorted(set(labels)):
    idx = np.flatnonzero(labels == c)
    rng.shuffle(idx)
    train[idx[: int(round(0.7 * len(idx)))]] = True
a[train].copy().write_h5ad(train_out)
a[~train].copy().write_h5ad(test_out)
print(f"train {train.sum()} cells, test {(~train).sum()} cells")

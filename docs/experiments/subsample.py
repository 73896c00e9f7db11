"""Seeded stratified subsample of an h5ad by obs[KEY] (at most N cells, classes in proportion, at least one
cell per class): python subsample.py IN OUT N [KEY] [SEED]."""
import sys

import anndata as ad
import numpy as np

src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
key = sys.argv[4] if len(sys.argv) > 4 else "celltype"
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
a = ad.read_h5ad(src)
labels = a.obs[key].astype(str).to_numpy()
rng = np.random.default_rng(seed)
keep = []
for c in sorted(set(labels)):
    idx = np.flatnonzero(labels == c)
    rng.shuffle(idx)
    keep.extend(idx[: max(1, int(round(n * len(idx) / a.n_obs)))])
a[np.sort(np.array(keep))].copy().write_h5ad(out)
print(f"{out}: {len(keep)} of {a.n_obs} cells")

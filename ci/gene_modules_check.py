"""Checks `scfoundation gene-modules` outputs against anndata and scanpy (tests/gene_modules.rs).

Usage: gene_modules_check.py INPUT.h5ad MODULES.tsv SCORES.h5ad N_HVG CTRL_SIZE
- SCORES.h5ad reads with anndata; its obs keeps the input's obs (index and columns) and adds module_<id>;
- with CTRL_SIZE larger than every expression bin (no random draw), every module_<id> equals
  scanpy.tl.score_genes on the same data (input genes that map to scFoundation genes, normalize_total to 1e4,
  log1p; n_bins 25) within 1e-4;
- N_HVG > 0: the TSV's genes are scanpy's highly_variable_genes(flavor="seurat", n_top_genes=N_HVG) on that
  data (at least 90 % overlap: scanpy keeps every gene tied with the N-th, float32 vs float64 sums).
"""
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc

inp, tsv, scores, n_hvg, ctrl_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
root = Path(__file__).resolve().parent.parent
vocab = pd.read_csv(root / "src/data/OS_scRNA_gene_index.19264.tsv", sep="\t")["gene_name"].astype(str)

a = ad.read_h5ad(inp)
s = ad.read_h5ad(scores)
m = pd.read_csv(tsv, sep="\t")
assert list(m.columns) == ["gene", "module", "module_size", "degree", "intra_similarity", "mean_expression"], m.columns
assert list(s.obs_names) == list(a.obs_names), "obs names differ"
for c in a.obs.columns:
    assert c in s.obs.columns, f"obs column {c} lost"
    assert (s.obs[c].astype(str).values == a.obs[c].astype(str).values).all(), f"obs column {c} differs"
n_modules = m["module"].nunique()
assert sorted(m["module"].unique()) == list(range(n_modules)), "module ids are not 0..n-1"
for k in range(n_modules):
    assert f"module_{k}" in s.obs.columns, f"module_{k} missing"
    assert s.obs[f"module_{k}"].dtype == np.float64
assert s.uns["scfoundation"]["step"] == "gene-modules"
assert (m.groupby("module").size() == m.groupby("module")["module_size"].first()).all()

ref = a[:, a.var_names.isin(set(vocab))].copy()
ref.X = ref.X.astype(np.float32)
sc.pp.normalize_total(ref, target_sum=1e4)
sc.pp.log1p(ref)

if n_hvg > 0:
    hv = sc.pp.highly_variable_genes(ref, flavor="seurat", n_top_genes=n_hvg, inplace=False)
    theirs = set(ref.var_names[hv["highly_variable"].values])
    ours = set(m["gene"])
    assert len(ours) == n_hvg, len(ours)
    overlap = len(ours & theirs) / n_hvg
    print(f"hvg overlap with scanpy: {overlap:.3f} ({len(theirs)} scanpy genes)")
    assert overlap >= 0.9, (sorted(ours - theirs), sorted(theirs - ours))

if ctrl_size > 0:
    worst = 0.0
    for k in range(n_modules):
        genes = [g for g in m.loc[m["module"] == k, "gene"] if g in ref.var_names]
        if not genes:
            assert s.obs[f"module_{k}"].isna().all()
            continue
        sc.tl.score_genes(ref, genes, ctrl_size=ctrl_size, n_bins=25, score_name="ref")
        d = np.abs(ref.obs["ref"].values - s.obs[f"module_{k}"].values).max()
        worst = max(worst, d)
        assert d < 1e-4, f"module {k}: scores differ from scanpy by {d}"
    print(f"score_genes: {n_modules} modules agree with scanpy (max diff {worst:.2e})")
print("ok")

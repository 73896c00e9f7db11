"""Checks what ci/nextflow/gene_modules_test.nf (SCFOUNDATION_GENEMODULES) produced.

usage: check_gene_modules.py RESULTS_DIR [--stub]
- each run published exactly its four outputs, with the literal prefix (a quoting slip renames or drops one),
  and each emit carried the file it names;
- modules TSV: the header line, one row per gene (40 highly variable genes; the 30 known symbols of
  test-data/pbmc_markers.txt), module ids 0..n-1 with module_size the size of each;
- scores h5ad (anndata): the input's cells and obs columns, and exactly one float64 module_<id> column per module;
- heatmap: a PNG (signature, IHDR);
- provenance sidecar: JSON of the gene-modules step with the tiny model's sha256 and the options given;
- versions: the process in the versions topic.
With --stub: the same file names, the stub's header line.
"""
import json
import struct
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

TINY_SHA = "c5083dd4e705f12275bd1da8177f7600a07059b2b40bd4bbfe8e3aaca59b2173"
HEADER = ["gene", "module", "module_size", "degree", "intra_similarity", "mean_expression"]
root = Path(__file__).resolve().parents[2]
results = Path(sys.argv[1])
stub = "--stub" in sys.argv[2:]
src = ad.read_h5ad(root / "test-data/pbmc_tiny.h5ad")
markers = [l.strip() for l in (root / "test-data/pbmc_markers.txt").read_text().splitlines()
           if l.strip() and not l.startswith("#")]

# Must match gene_modules_test.nf / gene_modules_test.config.
RUNS = {
    "hvg": ("scfoundation_genemodules", "pbmc_tiny_gene_modules"),
    "odd": ("scfoundation_genemodules_odd", 'modules "it\'s" $HOME'),
}
per_group = src.obs["cell_type"].astype(str).value_counts()
EXPECT = {
    "hvg": dict(n_genes=40, n_cells_used=src.n_obs, prov={"k": "5", "n_hvg": "40", "genes": "hvg"}),
    "odd": dict(n_genes=len(markers), n_cells_used=int(np.minimum(per_group.values, 1).sum()),
                prov={"k": "5", "seed": "1", "groupby": "cell_type", "per_group": "1",
                      "genes": "file:marker genes, it's.txt"}),
}

emits = {}
for line in (results / "gene_modules_emits.tsv").read_text().splitlines():
    if line:
        run, emit, name = line.split("\t")
        emits[(run, emit)] = name

for run, (d, prefix) in RUNS.items():
    names = {"modules": f"{prefix}.tsv", "provenance": f"{prefix}.tsv.provenance.json",
             "scores": f"{prefix}.scores.h5ad", "heatmap": f"{prefix}.png"}
    found = sorted(p.name for p in (results / d).iterdir())
    assert found == sorted(names.values()), (run, found)
    for emit, name in names.items():
        assert emits.get((run, emit)) == name, (run, emit, emits.get((run, emit)), name)
    tsv = (results / d / names["modules"]).read_text().splitlines()
    assert tsv[0].split("\t") == HEADER, (run, tsv[0])
    if stub:
        continue

    m = pd.read_csv(results / d / names["modules"], sep="\t")
    e = EXPECT[run]
    assert len(m) == e["n_genes"] and m["gene"].is_unique, (run, len(m))
    if run == "odd":
        assert sorted(m["gene"]) == sorted(markers), run
    n_modules = m["module"].nunique()
    assert sorted(m["module"].unique()) == list(range(n_modules)), (run, "module ids are not 0..n-1")
    assert (m.groupby("module").size() == m.groupby("module")["module_size"].first()).all(), run

    s = ad.read_h5ad(results / d / names["scores"])
    assert list(s.obs_names) == list(src.obs_names), (run, "obs names differ from the input")
    cols = [c for c in s.obs.columns if c.startswith("module_")]
    assert sorted(cols) == sorted(f"module_{k}" for k in range(n_modules)), (run, cols, n_modules)
    assert all(s.obs[c].dtype == np.float64 and np.isfinite(s.obs[c]).all() for c in cols), run
    assert [c for c in s.obs.columns if c not in cols] == list(src.obs.columns), (run, list(s.obs.columns))
    assert s.uns["scfoundation"]["model_sha256"] == TINY_SHA, run

    png = (results / d / names["heatmap"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", (run, png[:16])
    w, h = struct.unpack(">II", png[16:24])
    assert w > 0 and h > 0, (run, w, h)

    p = json.loads((results / d / names["provenance"]).read_text())
    assert p["step"] == "gene-modules" and p["model_sha256"] == TINY_SHA, (run, p)
    assert p["n_genes"] == str(e["n_genes"]) and p["n_modules"] == str(n_modules), (run, p)
    assert p["n_cells_used"] == str(e["n_cells_used"]), (run, p["n_cells_used"], e["n_cells_used"])
    for k, v in e["prov"].items():
        assert p.get(k) == v, (run, k, p.get(k), v)
    print(f"{run}: {len(m)} genes in {n_modules} modules, {p['n_cells_used']} cells, heatmap {w}x{h}")

versions = (results / "versions.tsv").read_text().splitlines()
for proc in ("SCFOUNDATION_GENEMODULES", "SCFOUNDATION_GENEMODULES_ODD"):
    assert any(l.split("\t")[0] == proc and l.split("\t")[1] == "scfoundation" for l in versions), (proc, versions)
print(f"nextflow gene modules{' (stub)' if stub else ''}: outputs OK")

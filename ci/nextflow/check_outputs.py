"""Checks what the Nextflow module run and the example pipeline produced.

usage: check_outputs.py modules RESULTS_DIR [--stub]
       check_outputs.py pipeline RESULTS_DIR WHOLE_FILE_EMBEDDING.h5ad
"""
import sys
from pathlib import Path

import anndata as ad
import numpy as np

TINY_SHA = "c5083dd4e705f12275bd1da8177f7600a07059b2b40bd4bbfe8e3aaca59b2173"
root = Path(__file__).resolve().parents[2]
src = ad.read_h5ad(root / "test-data/pbmc_tiny.h5ad")


def one(d, pattern):
    files = sorted(Path(d).glob(pattern))
    assert len(files) == 1, f"expected one {pattern} in {d}, found {files}"
    return files[0]


def same_obs(a):
    assert list(a.obs_names) == list(src.obs_names), "obs names differ from the input"
    assert list(a.obs.columns) == list(src.obs.columns), a.obs.columns
    assert (a.obs["cell_type"].astype(str).values == src.obs["cell_type"].astype(str).values).all()


def prov(a, **expected):
    p = dict(a.uns["scfoundation"])
    assert p["model_sha256"] == TINY_SHA, p
    for k, v in expected.items():
        assert p.get(k) == v, (k, p.get(k), v)


mode, results = sys.argv[1], Path(sys.argv[2])
if mode == "modules":
    stub = "--stub" in sys.argv
    outs = {
        "embed": one(results / "scfoundation_embed", "*.h5ad"),
        "geneembed": one(results / "scfoundation_geneembed", "*.h5ad"),
        "enhance": one(results / "scfoundation_enhance", "*.h5ad"),
        "merge": one(results / "scfoundation_merge", "*.h5ad"),
    }
    shards = sorted((results / "scfoundation_split" / "shards").glob("*.h5ad"))
    versions = (results / "versions.tsv").read_text().splitlines()
    assert {l.split("\t")[0].split(":")[-1] for l in versions} >= {
        "SCFOUNDATION_WEIGHTS", "SCFOUNDATION_EMBED", "SCFOUNDATION_GENEEMBED", "SCFOUNDATION_ENHANCE",
        "SCFOUNDATION_SPLIT", "SCFOUNDATION_MERGE"}, versions
    if stub:
        assert len(shards) == 2, shards
        print("nextflow modules (stub): outputs present")
        sys.exit(0)
    weights = (results / "weights.tsv").read_text().split()
    assert weights == ["tiny_models.ckpt", TINY_SHA], weights
    version = (root / "Cargo.toml").read_text().split('version = "')[1].split('"')[0]
    assert all(l.split("\t")[2] == version for l in versions), versions
    e = ad.read_h5ad(outs["embed"])
    same_obs(e)
    assert e.obsm["X_scfoundation"].shape == (16, 128) and e.obsm["X_scfoundation"].dtype == np.float32
    prov(e, mode="cell", checkpoint_key="cell")
    g = ad.read_h5ad(outs["geneembed"])
    assert g.varm["X_scfoundation"].shape == (19264, 24)
    prov(g, mode="gene", gene_embedding="mean", checkpoint_key="gene")
    x = ad.read_h5ad(outs["enhance"])
    same_obs(x)
    assert x.shape == (16, 19264)
    prov(x, mode="expression", checkpoint_key="rde", tgthighres="f2", batch_size="4")
    assert [s.name for s in shards] == [f"pbmc_tiny_0000{i}.h5ad" for i in range(4)], shards
    m = ad.read_h5ad(outs["merge"])
    same_obs(m)
    assert (m.X != src.X).nnz == 0 and list(m.var_names) == list(src.var_names)
    print("nextflow modules: outputs checked")
elif mode == "pipeline":
    merged = ad.read_h5ad(one(results / "embeddings", "*.h5ad"))
    whole = ad.read_h5ad(sys.argv[3])
    same_obs(merged)
    prov(merged, merged_files="4")
    d = np.abs(merged.obsm["X_scfoundation"] - whole.obsm["X_scfoundation"]).max()
    assert d <= 1e-5, d
    print(f"example pipeline: split/embed/merge equals embedding the whole file (max abs diff {d:.2e})")
else:
    sys.exit(__doc__)

"""Python anndata must read what the engine writes: cell, gene (full and mean) and expression outputs,
with obs copied from the input and provenance in uns."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np

root = Path(__file__).resolve().parent.parent
# the binary under test: SCF_BIN_DIR (set by ci/env.sh), else where `cargo build --release` puts it
bin_dir = os.environ.get("SCF_BIN_DIR") or Path(os.environ.get("CARGO_TARGET_DIR") or root / "target", "release")
exe = Path(root, bin_dir, "scfoundation")
model = root / "test-data/reference/tiny_models.ckpt"
src = root / "test-data/pbmc_tiny.h5ad"


def run(*args):
    subprocess.run([str(exe), *map(str, args)], check=True)


with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    inp = ad.read_h5ad(src)

    run("embed", "--input", src, "--model", model, "--output", d / "cell.h5ad")
    a = ad.read_h5ad(d / "cell.h5ad")
    assert a.n_obs == inp.n_obs, (a.n_obs, inp.n_obs)
    assert list(a.obs_names) == list(inp.obs_names)
    assert list(a.obs.columns) == list(inp.obs.columns)
    assert (a.obs["cell_type"].astype(str).values == inp.obs["cell_type"].astype(str).values).all()
    e = a.obsm["X_scfoundation"]
    assert e.dtype == np.float32 and e.shape == (inp.n_obs, 128), e.shape
    prov = a.uns["scfoundation"]
    for k in ("engine_version", "model_sha256", "checkpoint_key", "mode", "tgthighres"):
        assert k in prov, k
    assert prov["checkpoint_key"] == "cell"
    np.save(d / "ref.npy", e)
    run("embed", "--input", src, "--model", model, "--output", d / "cell.npy")
    assert np.array_equal(np.load(d / "cell.npy"), e)

    run("embed", "--input", src, "--model", model, "--output", d / "expr.h5ad", "--mode", "expression")
    x = ad.read_h5ad(d / "expr.h5ad")
    assert x.shape == (inp.n_obs, 19264) and x.var_names[0] == "A1BG", x

    run("embed", "--input", src, "--model", model, "--output", d / "gene.h5ad", "--mode", "gene")
    g = ad.read_h5ad(d / "gene.h5ad")
    assert g.obsm["X_scfoundation_gene"].shape == (inp.n_obs, 19264, 24)

    run("embed", "--input", src, "--model", model, "--output", d / "genemean.h5ad", "--mode", "gene",
        "--gene-embedding", "mean")
    m = ad.read_h5ad(d / "genemean.h5ad")
    assert m.varm["X_scfoundation"].shape == (19264, 24)
    assert np.allclose(m.varm["X_scfoundation"], g.obsm["X_scfoundation_gene"].mean(axis=0), atol=1e-5)

    # split keeps every per-cell part of a file (X, layers, raw, obs dtypes) and merge restores it
    full = ad.read_h5ad(root / "test-data/pbmc_tiny_layers.h5ad")
    run("split", "--input", root / "test-data/pbmc_tiny_layers.h5ad", "--cells-per-shard", "6", "--outdir", d / "sh")
    shards = sorted((d / "sh").glob("shard_*.h5ad"))
    assert len(shards) == 3, shards
    s1 = ad.read_h5ad(shards[1])
    assert (s1.X != full.X[6:12]).nnz == 0
    assert (s1.layers["counts"] != full.layers["counts"][6:12]).nnz == 0
    assert (s1.raw.X != full.raw.X[6:12]).nnz == 0 and list(s1.raw.var_names) == list(full.raw.var_names)
    assert s1.obs.dtypes.equals(full.obs.dtypes) and s1.obs.equals(full.obs.iloc[6:12])
    run("merge", *shards, "--output", d / "back.h5ad")
    back = ad.read_h5ad(d / "back.h5ad")
    assert back.obs.equals(full.obs) and (back.X != full.X).nnz == 0
    assert (back.layers["counts"] != full.layers["counts"]).nnz == 0 and back.var.equals(full.var)

    # backed mode (what big-data users do)
    b = ad.read_h5ad(d / "cell.h5ad", backed="r")
    assert b.obsm["X_scfoundation"].shape == e.shape
print("h5ad round trip: OK")

#!/usr/bin/env python3
"""Checks scfoundation outputs with anndata itself.

    check_layouts.py embed INPUT OUTPUT          obs carried over unchanged, embedding present
    check_layouts.py roundtrip INPUT MERGED SHARD...
                                                 shards readable and in the current encoding; the
                                                 merge of the shards equals the input (X, obs, var,
                                                 layers, obsm, raw, varm, uns)
Exits non-zero with the first difference found.
"""
import sys
import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

warnings.simplefilter("ignore")


def dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def same_array(a, b, what):
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, obj=what)
        return
    da, db = dense(a), dense(b)
    assert da.shape == db.shape, f"{what}: shape {da.shape} vs {db.shape}"
    assert da.dtype == db.dtype, f"{what}: dtype {da.dtype} vs {db.dtype}"
    assert np.array_equal(da, db), f"{what}: values differ"


def current_encoding(path):
    """Everything we write carries the current encoding attributes; no object references remain."""
    with h5py.File(path, "r") as f:
        assert f.attrs.get("encoding-type") == "anndata", f"{path}: root encoding-type"

        def visit(name, obj):
            for k, v in obj.attrs.items():
                assert not isinstance(v, h5py.Reference), f"{path}: {name} has a reference attribute {k}"
            if isinstance(obj, h5py.Group) and name.split("/")[-1] in ("obs", "var"):
                assert obj.attrs.get("encoding-version") == "0.2.0", f"{path}: {name} is not encoding 0.2.0"
                assert "__categories" not in obj, f"{path}: {name} keeps __categories"

        f.visititems(visit)


def embed(inp, out):
    a, b = ad.read_h5ad(inp), ad.read_h5ad(out)
    current_encoding(out)
    pd.testing.assert_frame_equal(a.obs, b.obs, obj="obs")
    e = b.obsm["X_scfoundation"]
    assert e.shape[0] == a.n_obs and np.isfinite(e).all(), "embedding"


def roundtrip(inp, merged, shards):
    a = ad.read_h5ad(inp)
    for s in shards:
        current_encoding(s)
        ad.read_h5ad(s)
    current_encoding(merged)
    m = ad.read_h5ad(merged)
    assert list(m.obs_names) == list(a.obs_names), "obs names"
    assert list(m.var_names) == list(a.var_names), "var names"
    pd.testing.assert_frame_equal(a.obs, m.obs, obj="obs")
    pd.testing.assert_frame_equal(a.var, m.var, obj="var")
    same_array(a.X, m.X, "X")
    for key in ("layers", "obsm", "varm"):
        ga, gm = getattr(a, key), getattr(m, key)
        assert sorted(ga.keys()) == sorted(gm.keys()), f"{key} keys {sorted(ga.keys())} vs {sorted(gm.keys())}"
        for k in ga.keys():
            same_array(ga[k], gm[k], f"{key}/{k}")
    assert (a.raw is None) == (m.raw is None), "raw"
    if a.raw is not None:
        same_array(a.raw.X, m.raw.X, "raw/X")
        assert list(a.raw.var_names) == list(m.raw.var_names), "raw var names"
    for k in a.uns.keys():
        assert k in m.uns, f"uns/{k}"


def main():
    mode = sys.argv[1]
    if mode == "embed":
        embed(sys.argv[2], sys.argv[3])
    elif mode == "roundtrip":
        roundtrip(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(f"unknown mode {mode}")
    print(f"{mode} {sys.argv[2]}: ok")


if __name__ == "__main__":
    main()

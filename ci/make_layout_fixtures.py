#!/usr/bin/env python3
"""Writes h5ad files in every layout anndata reads, with the writers (or the HDF5 surgery) that produce
them in the wild, and checks that the installed anndata reads each one back.

    make_layout_fixtures.py OUTDIR

- current.h5ad    anndata's own writer: CSR X, categorical/nullable/bool/float obs columns, a
                  nullable-string-array column, layers (dense, CSC), obsm (dense, CSR, dataframe),
                  varm, raw (CSR), obsp, nested uns.
- dense_csc.h5ad  dense float64 X and a CSC layer; fixed-length byte strings for the obs index.
- old07.h5ad      the anndata 0.7 layout (the 10x PBMC3k file in the wild is one): categorical
                  columns as code datasets whose `categories` attribute is an object reference into
                  `__categories/<column>`, dataframe encoding 0.1.0, no root encoding attributes.
- legacy06.h5ad   the anndata 0.6 layout: obs/var as compound datasets of fixed-length strings and
                  numbers (first field the index), categories in uns/<column>_categories, X as an
                  h5sparse group (`h5sparse_format`/`h5sparse_shape`), raw.X and raw.var at the top,
                  obsm as one compound dataset with an array field.
Gene names are real scFoundation genes so that embed maps them.
"""
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

GENES = ["A1BG", "A1CF", "A2M", "A2ML1", "A3GALT2", "A4GALT", "A4GNT", "AAAS", "AACS", "AADAC",
         "AADACL2", "AADACL3", "AADACL4", "AADAT", "AAGAB", "AAK1", "AAMDC", "AAMP", "AANAT", "AAR2"]
N_CELLS = 12


def counts(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.5, size=(N_CELLS, len(GENES))).astype(np.float32)
    x[:, 0] += 1  # every cell expresses at least one gene
    return x


def base():
    x = counts()
    types = np.array(["T", "B", "NK"])[np.arange(N_CELLS) % 3]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(types),
            "stage": pd.Categorical(
                np.array(["early", "late"])[np.arange(N_CELLS) % 2], categories=["early", "late"], ordered=True
            ),
            "n_counts": x.sum(1).astype(np.float64),
            "batch_int": pd.array([1, None] * (N_CELLS // 2), dtype="Int64"),
            "passed": pd.array([True, False, None] * (N_CELLS // 3), dtype="boolean"),
            "is_doublet": np.arange(N_CELLS) % 5 == 0,
        },
        index=[f"cell-{i}" for i in range(N_CELLS)],
    )
    var = pd.DataFrame(
        {"gene_ids": [f"ENSG{i:011d}" for i in range(len(GENES))],
         "kind": pd.Categorical(["protein", "lnc"] * (len(GENES) // 2))},
        index=GENES,
    )
    return x, obs, var


def current(out):
    x, obs, var = base()
    a = ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=var)
    a.layers["counts"] = x.astype(np.int32)
    a.layers["csc"] = sp.csc_matrix(x * 2)
    a.obsm["X_pca"] = np.arange(N_CELLS * 3, dtype=np.float32).reshape(N_CELLS, 3)
    a.obsm["X_sparse"] = sp.csr_matrix(x[:, :4])
    a.obsm["meta"] = pd.DataFrame({"u": np.arange(N_CELLS)}, index=obs.index)
    a.varm["PCs"] = np.ones((len(GENES), 2))
    a.obsp["distances"] = sp.csr_matrix(np.eye(N_CELLS))
    a.uns["params"] = {"n_neighbors": 15, "method": "umap", "nested": {"k": np.arange(3)}}
    a.raw = ad.AnnData(X=sp.csr_matrix(x + 1), var=var)
    a.write_h5ad(out)
    # A nullable-string-array column (pandas StringDtype), written where this anndata allows it,
    # else built by hand in the same encoding.
    with h5py.File(out, "r+") as f:
        g = f["obs"].create_group("label")
        g.attrs["encoding-type"] = "nullable-string-array"
        g.attrs["encoding-version"] = "0.1.0"
        vals = np.array([f"L{i}" for i in range(N_CELLS)], dtype=object)
        g.create_dataset("values", data=vals, dtype=h5py.string_dtype())
        g.create_dataset("mask", data=np.arange(N_CELLS) % 4 == 1)
        g["values"].attrs.update({"encoding-type": "string-array", "encoding-version": "0.2.0"})
        g["mask"].attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        order = list(f["obs"].attrs["column-order"]) + ["label"]
        f["obs"].attrs["column-order"] = np.array(order, dtype=object)


def dense_csc(out):
    x, obs, var = base()
    a = ad.AnnData(X=x.astype(np.float64), obs=obs[["cell_type", "n_counts"]], var=var[["gene_ids"]])
    a.layers["csc"] = sp.csc_matrix(x)
    a.write_h5ad(out)
    with h5py.File(out, "r+") as f:
        names = [n.encode() for n in obs.index]
        del f["obs/_index"]
        f["obs"].create_dataset("_index", data=np.array(names, dtype="S16"))


def old07(src, out):
    """Rewrites a current file into the anndata 0.7 layout."""
    with h5py.File(src, "r") as s, h5py.File(out, "w") as d:
        for key in ("X", "layers", "obsm", "varm", "uns"):
            if key in s:
                s.copy(key, d)
        for frame in ("obs", "var", "raw/var"):
            sg = s[frame]
            dg = d.require_group(frame)
            dg.attrs["_index"] = "_index"
            dg.attrs["encoding-type"] = "dataframe"
            dg.attrs["encoding-version"] = "0.1.0"
            cols = []
            cats_group = None
            for name in sg.attrs["column-order"]:
                name = name.decode() if isinstance(name, bytes) else name
                item = sg[name]
                if isinstance(item, h5py.Group) and item.attrs.get("encoding-type") == "categorical":
                    if cats_group is None:
                        cats_group = dg.create_group("__categories")
                    cats = cats_group.create_dataset(name, data=item["categories"][()])
                    cats.attrs["ordered"] = bool(item.attrs["ordered"])
                    codes = dg.create_dataset(name, data=item["codes"][()])
                    codes.attrs["categories"] = cats.ref
                elif isinstance(item, h5py.Group):
                    # anndata 0.7 had no nullable encodings: such columns were float or object arrays.
                    vals = item["values"][()]
                    if vals.dtype.kind in "iub":
                        vals = np.where(item["mask"][()], np.nan, vals.astype(np.float64))
                    dg.create_dataset(name, data=vals)
                else:
                    dg.create_dataset(name, data=item[()])
                cols.append(name)
            dg.create_dataset("_index", data=sg["_index"][()])
            dg.attrs["column-order"] = np.array(cols, dtype=object)
        s.copy("raw/X", d["raw"])
        for key in ("raw/varm",):
            if key in s:
                s.copy(key, d["raw"])


def legacy06(out):
    x, obs, var = base()
    with h5py.File(out, "w") as f:
        csr = sp.csr_matrix(x)
        g = f.create_group("X")
        g.attrs["h5sparse_format"] = "csr"
        g.attrs["h5sparse_shape"] = np.array(csr.shape)
        g.create_dataset("data", data=csr.data)
        g.create_dataset("indices", data=csr.indices)
        g.create_dataset("indptr", data=csr.indptr)

        def compound(name, index, cols):
            fields = [("index", "S32")] + [(n, v.dtype) for n, v in cols]
            rec = np.zeros(len(index), dtype=fields)
            rec["index"] = [s.encode() for s in index]
            for n, v in cols:
                rec[n] = v
            f.create_dataset(name, data=rec)

        codes = obs["cell_type"].cat.codes.to_numpy().astype(np.int32)
        compound("obs", list(obs.index), [("cell_type", codes), ("n_counts", obs["n_counts"].to_numpy()),
                                          ("sample", np.array([b"s1", b"s2"] * (N_CELLS // 2), dtype="S8"))])
        compound("var", list(var.index), [("gene_ids", var["gene_ids"].to_numpy().astype("S16"))])
        uns = f.create_group("uns")
        uns.create_dataset("cell_type_categories", data=np.array([c.encode() for c in obs["cell_type"].cat.categories]))
        obsm = np.zeros(N_CELLS, dtype=[("X_pca", np.float32, (3,))])
        obsm["X_pca"] = np.arange(N_CELLS * 3, dtype=np.float32).reshape(N_CELLS, 3)
        f.create_dataset("obsm", data=obsm)
        f.create_dataset("raw.X", data=x + 1)
        rec = np.zeros(len(GENES), dtype=[("index", "S32")])
        rec["index"] = [s.encode() for s in GENES]
        f.create_dataset("raw.var", data=rec)


def main():
    outdir = Path(sys.argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    current(outdir / "current.h5ad")
    dense_csc(outdir / "dense_csc.h5ad")
    old07(outdir / "current.h5ad", outdir / "old07.h5ad")
    legacy06(outdir / "legacy06.h5ad")
    for p in sorted(outdir.glob("*.h5ad")):
        a = ad.read_h5ad(p)  # every fixture must be a file anndata itself reads
        assert a.n_obs == N_CELLS, p
    print("fixtures:", " ".join(p.name for p in sorted(outdir.glob("*.h5ad"))))


if __name__ == "__main__":
    main()

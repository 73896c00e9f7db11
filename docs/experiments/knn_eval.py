"""kNN (k=15, cosine, majority vote) cell type accuracy and macro-F1 of embeddings on held-out cells,
beside a PCA baseline (library-size normalised to 1e4, log1p, top-2000 variance genes of the training
cells, 50 components fitted on the training cells). Prints one JSON object."""
import json
import sys

import anndata as ad
import numpy as np
import scipy.sparse as sp

K = 15


def knn_predict(train_x, train_y, test_x):
    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sims = unit(test_x) @ unit(train_x).T
    nn = np.argsort(-sims, axis=1, kind="stable")[:, :K]
    classes = sorted(set(train_y))
    out = []
    for row in nn:
        votes = {c: 0 for c in classes}
        for j in row:
            votes[train_y[j]] += 1
        out.append(max(classes, key=lambda c: (votes[c], -classes.index(c))))
    return np.array(out)


def scores(y, p):
    classes = sorted(set(y))
    f1 = []
    for c in classes:
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float(np.mean(p == y)), "macro_f1": float(np.mean(f1))}


def dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def pca_baseline(train, test):
    def norm(a):
        x = dense(a.X).astype(np.float64)
        return np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)

    xtr, xte = norm(train), norm(test)
    top = np.argsort(-xtr.var(0), kind="stable")[:2000]
    xtr, xte = xtr[:, top], xte[:, top]
    mu = xtr.mean(0)
    _, _, vt = np.linalg.svd(xtr - mu, full_matrices=False)
    return (xtr - mu) @ vt[:50].T, (xte - mu) @ vt[:50].T


train = ad.read_h5ad(sys.argv[1])
test = ad.read_h5ad(sys.argv[2])
ytr = train.obs["celltype"].astype(str).to_numpy()
yte = test.obs["celltype"].astype(str).to_numpy()
res = {"train_cells": int(train.n_obs), "test_cells": int(test.n_obs), "k": K}
ptr, pte = pca_baseline(train, test)
res["pca50"] = scores(yte, knn_predict(ptr, ytr, pte))
for spec in sys.argv[3:]:
    name, etr, ete = spec.split("=", 1)[0], *spec.split("=", 1)[1].split(",")
    a, b = ad.read_h5ad(etr), ad.read_h5ad(ete)
    assert list(a.obs_names) == list(train.obs_names) and list(b.obs_names) == list(test.obs_names)
    res[name] = scores(yte, knn_predict(a.obsm["X_scfoundation"], ytr, b.obsm["X_scfoundation"]))
print(json.dumps(res, indent=1))

"""Baseline for the annotation report: PCA (50 components of log1p(CP10k), top-2000 variance genes of the
training cells) + multinomial logistic regression (scikit-learn, class_weight='balanced'), fitted on the
training cells, scored on the held-out cells. Prints one JSON object."""
import json
import sys

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score


def norm(a):
    x = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    x = x.astype(np.float64)
    return np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)


train, test = ad.read_h5ad(sys.argv[1]), ad.read_h5ad(sys.argv[2])
key = sys.argv[3] if len(sys.argv) > 3 else "celltype"
xtr, xte = norm(train), norm(test)
top = np.argsort(-xtr.var(0), kind="stable")[:2000]
xtr, xte = xtr[:, top], xte[:, top]
mu = xtr.mean(0)
_, _, vt = np.linalg.svd(xtr - mu, full_matrices=False)
ptr, pte = (xtr - mu) @ vt[:50].T, (xte - mu) @ vt[:50].T
ytr = train.obs[key].astype(str).to_numpy()
yte = test.obs[key].astype(str).to_numpy()
clf = LogisticRegression(max_iter=5000, class_weight="balanced").fit(ptr, ytr)
p = clf.predict(pte)
print(json.dumps({"baseline": "pca50+logreg", "accuracy": accuracy_score(yte, p),
                  "macro_f1": f1_score(yte, p, average="macro")}))

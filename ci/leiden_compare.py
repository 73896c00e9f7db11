"""Runs leidenalg on a graph written by tests/gene_modules.rs, for comparison with the Rust Leiden.

Usage: leiden_compare.py EDGES.tsv N_NODES RESOLUTION SEED OUT.txt
EDGES.tsv: one undirected edge per line, "i<TAB>j<TAB>weight". OUT.txt gets the quality on the first line
(RBConfigurationVertexPartition.quality()) and then one membership per line, in node order.
Needs igraph and leidenalg (pinned in ci/setup.sh's anndata venv); fails when they are missing.
"""
import sys

import igraph as ig
import leidenalg

edges_path, n, resolution, seed, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
edges, weights = [], []
with open(edges_path) as f:
    for line in f:
        i, j, w = line.split()
        edges.append((int(i), int(j)))
        weights.append(float(w))
g = ig.Graph(n=n, edges=edges, directed=False)
g.es["weight"] = weights
p = leidenalg.find_partition(
    g,
    leidenalg.RBConfigurationVertexPartition,
    weights="weight",
    resolution_parameter=resolution,
    seed=seed,
    n_iterations=-1,
)
with open(out, "w") as f:
    f.write(f"{p.quality()!r}\n")
    for m in p.membership:
        f.write(f"{m}\n")

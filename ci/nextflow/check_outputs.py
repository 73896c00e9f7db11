"""Checks what the Nextflow module run and the example pipeline produced.

usage: check_outputs.py modules RESULTS_DIR [--stub]
       check_outputs.py pipeline RESULTS_DIR WHOLE_FILE_EMBEDDING.h5ad [TRACE.tsv MAX_CPUS]
"""
import hashlib
import json
import os
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


# The *_ODD module runs (modules_test.nf, modules_test.config): names with spaces, quotes, $ and `.
ODD_ID = 'pbmc tiny\'s "odd"'
ODD_SHARD = 'shard \'q\' "s"'
ODD_NAMES = {
    "scfoundation_embed_odd": f"{ODD_ID}_scfoundation.h5ad",
    "scfoundation_geneembed_odd": f"{ODD_ID}_scfoundation_genes.h5ad",
    "scfoundation_enhance_odd": 'it\'s "enhanced" $HOME.h5ad',
    "scfoundation_merge_odd": f"{ODD_ID} merged, it's `echo x`.h5ad",
}


def exact(d, name):
    """The one file in d, with exactly this name (a quoting slip renames or drops it)."""
    files = sorted(p.name for p in Path(d).iterdir())
    assert files == [name], f"expected exactly [{name!r}] in {d}, found {files}"
    return Path(d) / name


def prov(a, **expected):
    p = dict(a.uns["scfoundation"])
    assert p["model_sha256"] == TINY_SHA, p
    for k, v in expected.items():
        assert p.get(k) == v, (k, p.get(k), v)


def sha256(f):
    return hashlib.sha256(Path(f).read_bytes()).hexdigest()


MODEL_FILES = ["cell.config.json", "cell.safetensors", "gene.config.json", "gene.safetensors", "provenance.json"]
CHECKPOINT_FILES = sorted(MODEL_FILES + ["loss.png", "train_log.jsonl", "train_state.safetensors"])
ODD_PRETRAIN = 'run "it\'s" $HOME'


def log_lines(d):
    return [json.loads(l) for l in (Path(d) / "train_log.jsonl").read_text().splitlines()]


def check_pretraining(results, stub):
    """init -> pretrain (2 steps) -> pretrain --resume (to step 3, new directory) -> embed the resumed checkpoint."""
    init = results / "scfoundation_init" / "tiny_seed1_init"
    first = results / "scfoundation_pretrain" / "pbmc_tiny_pretrain"
    resumed = results / "scfoundation_pretrain_resume" / "pbmc_tiny_pretrain"
    odd = results / "scfoundation_pretrain_odd" / ODD_PRETRAIN
    assert sorted(p.name for p in init.iterdir()) == sorted(MODEL_FILES), list(init.iterdir())
    for d in (first, resumed, odd):
        assert sorted(p.name for p in d.iterdir()) == CHECKPOINT_FILES, (d, sorted(p.name for p in d.iterdir()))
    assert sorted(p.name for p in (results / "scfoundation_pretrain_odd").iterdir()) == [ODD_PRETRAIN]
    emits = [l.split("\t") for l in (results / "pretrain_emits.tsv").read_text().splitlines() if l]
    by = {(e[0], e[1]): e[2:] for e in emits}
    assert by[("first", "log")] == ["train_log.jsonl"] and by[("first", "png")] == ["loss.png"], emits
    assert by[("resume", "log")] == ["train_log.jsonl"] and by[("resume", "png")] == ["loss.png"], emits
    if stub:
        return
    # The first run: steps 0 (validation loss of the start) .. 2, validation at every checkpoint (--save-every 1).
    a = log_lines(first)
    assert [r["step"] for r in a] == [0, 1, 2], a
    assert all("val_loss" in r for r in a), a
    assert all(r["cells"] == 2 * r["step"] and np.isfinite(r["loss"]) for r in a[1:]), a
    # The resumed run continued from step 2: the same first three lines, then step 3 (6 cells seen in all).
    b = log_lines(resumed)
    assert [r["step"] for r in b] == [0, 1, 2, 3], b
    assert b[:3] == a, "the resumed log does not continue the first run's"
    assert b[3]["cells"] == 6 and np.isfinite(b[3]["loss"]), b[3]
    pa, pb = (json.loads((d / "provenance.json").read_text()) for d in (first, resumed))
    assert pa["train_step"] == 2 and pb["train_step"] == 3, (pa["train_step"], pb["train_step"])
    assert pb["run"]["options"]["steps"] == 3 and pb["run"]["options"]["batch_size"] == 2, pb["run"]["options"]
    assert [d["file"] for d in pb["run"]["data"]] == ["pbmc_tiny.h5ad"], pb["run"]["data"]
    assert pa["run"]["init"]["sha256"] == sha256(init / "gene.safetensors"), pa["run"]["init"]
    assert sha256(first / "cell.safetensors") != sha256(resumed / "cell.safetensors"), "step 3 changed nothing"
    for d in (first, resumed, odd):
        assert (d / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", d
    assert [r["step"] for r in log_lines(odd)] == [0, 1]
    # The emits with a sha256 are the resumed checkpoint's entries, and SCFOUNDATION_EMBED used the cell one.
    assert by[("resume", "model_cell")] == ["pbmc_tiny_pretrain", sha256(resumed / "cell.safetensors")], emits
    assert by[("resume", "model_gene")] == ["pbmc_tiny_pretrain", sha256(resumed / "gene.safetensors")], emits
    e = ad.read_h5ad(one(results / "scfoundation_embed_pretrained", "*.h5ad"))
    same_obs(e)
    x = e.obsm["X_scfoundation"]
    assert x.shape == (16, 128) and x.dtype == np.float32 and np.isfinite(x).all(), (x.shape, x.dtype)
    p = dict(e.uns["scfoundation"])
    assert p["model_sha256"] == sha256(resumed / "cell.safetensors") and p["checkpoint_key"] == "cell", p
    losses = ", ".join(f"{r['loss']:.4f}" for r in b[1:])
    print(f"nextflow pretraining: init -> 2 steps -> resumed to step 3 (losses {losses}; the log continues the "
          f"first run's) -> SCFOUNDATION_EMBED of the checkpoint: {x.shape}")


HEAD_FILES = ["annotate.json", "confusion.png", "head.safetensors", "metrics.json", "train_log.jsonl", "training.png"]
ODD_HEAD = 'head "it\'s", odd'
ODD_ANNOTATED = 'annotated \'q\' "s" $(echo x)'
CLASSES = ["B", "CD14 Monocytes", "CD4 T", "CD8 T", "Dendritic", "FCGR3A Monocytes", "Megakaryocytes", "NK"]
METRICS_KEYS = {"accuracy", "macro_f1", "classes", "per_class", "confusion_matrix", "n_cells"}


def check_metrics(m, n_cells):
    assert METRICS_KEYS <= set(m), sorted(m)
    assert m["classes"] == CLASSES and m["n_cells"] == n_cells, (m["classes"], m["n_cells"])
    assert [c["class"] for c in m["per_class"]] == CLASSES, m["per_class"]
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (8, 8) and cm.sum() == n_cells, cm
    assert abs(m["accuracy"] - np.trace(cm) / n_cells) < 1e-9 and 0 <= m["macro_f1"] <= 1, m


def check_annotated(f, head):
    a = ad.read_h5ad(f)
    assert list(a.obs_names) == list(src.obs_names), "obs names differ from the query"
    assert list(a.obs.columns) == list(src.obs.columns) + ["scfoundation_label", "scfoundation_label_confidence"], a.obs.columns
    p = np.asarray(a.obsm["scfoundation_label_proba"])
    assert p.shape == (16, 8) and np.allclose(p.sum(1), 1, atol=1e-5), p.shape
    assert list(a.obs["scfoundation_label"].cat.categories) == CLASSES
    assert list(a.uns["scfoundation_label_classes"]) == CLASSES
    assert (a.obs["scfoundation_label"].astype(str).values == np.array(CLASSES)[p.argmax(1)]).all()
    assert np.allclose(a.obs["scfoundation_label_confidence"].values, p.max(1), atol=1e-6)
    pr = dict(a.uns["scfoundation"])
    assert pr["step"] == "annotate-predict" and pr["model_sha256"] == TINY_SHA, pr
    assert pr["head_sha256"] == sha256(head / "head.safetensors"), (pr["head_sha256"], head)
    return a


def check_annotation(results, stub):
    """annotate train (1 layer fine-tuned) -> predict with labels; embed -> train --finetune-layers 0 (reusing
    obsm['X_scfoundation']) -> predict without labels; both again on odd names."""
    head = results / "scfoundation_annotatetrain" / "pbmc_tiny_annotate_head"
    frozen = results / "scfoundation_annotatetrain_frozen" / "pbmc_tiny_annotate_head"
    odd_head = results / "scfoundation_annotatetrain_odd" / ODD_HEAD
    assert sorted(p.name for p in (results / "scfoundation_annotatetrain_odd").iterdir()) == [ODD_HEAD]
    pred = exact(results / "scfoundation_annotatepredict_frozen", "pbmc_tiny_dense_annotated.h5ad")  # no metrics
    files = sorted(p.name for p in (results / "scfoundation_annotatepredict").iterdir())
    assert files == ["pbmc_tiny_dense_annotated.h5ad", "pbmc_tiny_dense_annotated.metrics.json"], files
    odd_files = sorted(p.name for p in (results / "scfoundation_annotatepredict_odd").iterdir())
    assert odd_files == [ODD_ANNOTATED + ".h5ad", ODD_ANNOTATED + ".metrics.json"], odd_files
    emits = [l.split("\t") for l in (results / "annotate_emits.tsv").read_text().splitlines() if l]
    by = {(e[0], e[1]): e[2:] for e in emits}
    assert by[("train", "head")] == ["pbmc_tiny_annotate_head"], emits
    assert by[("train", "metrics")] == ["metrics.json"] and by[("train", "log")] == ["train_log.jsonl"], emits
    assert by[("train", "png")] == ["training.png", "confusion.png"], emits
    assert by[("predict", "metrics")] == ["pbmc_tiny_dense_annotated.metrics.json"], emits
    assert ("predict_frozen", "metrics") not in by and by[("predict_frozen", "h5ad")] == [pred.name], emits
    if stub:
        for d in (head, frozen, odd_head):
            assert set(HEAD_FILES) <= {p.name for p in d.iterdir()}, (d, sorted(p.name for p in d.iterdir()))
        return
    for d in (head, odd_head):
        assert sorted(p.name for p in d.iterdir()) == sorted(HEAD_FILES + ["encoder.safetensors"]), d
    assert sorted(p.name for p in frozen.iterdir()) == HEAD_FILES, sorted(p.name for p in frozen.iterdir())
    for d in (head, frozen, odd_head):
        j = json.loads((d / "annotate.json").read_text())
        assert j["base_model"]["sha256"] == TINY_SHA and j["base_model"]["checkpoint_key"] == "cell", j["base_model"]
        assert j["classes"] == CLASSES and j["classifier"]["hidden"] == 16 and j["classifier"]["in_dim"] == 128, j
        assert j["input"]["n_cells"] == 16 and j["input"]["n_labelled"] == 16, j["input"]
        check_metrics(json.loads((d / "metrics.json").read_text()), 8)
        for png in ("training.png", "confusion.png"):
            assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (d, png)
    j, jf = (json.loads((d / "annotate.json").read_text()) for d in (head, frozen))
    assert j["finetune_layers"] == 1 and j["embeddings"] == "computed" and j["finetuned_tensors"], j["embeddings"]
    assert j["input"]["file"] == "pbmc_tiny.h5ad" and j["epochs_run"] == 2, j["input"]
    # The frozen head took SCFOUNDATION_EMBED's embeddings instead of running the model again.
    assert jf["finetune_layers"] == 0 and jf["embeddings"] == "obsm['X_scfoundation']", (jf["finetune_layers"], jf["embeddings"])
    assert jf["input"]["file"] == "pbmc_tiny_scfoundation.h5ad", jf["input"]
    check_annotated(results / "scfoundation_annotatepredict" / "pbmc_tiny_dense_annotated.h5ad", head)
    m = json.loads((results / "scfoundation_annotatepredict" / "pbmc_tiny_dense_annotated.metrics.json").read_text())
    check_metrics(m, 16)
    assert m["label_key"] == "cell_type", m
    check_annotated(pred, frozen)
    check_annotated(results / "scfoundation_annotatepredict_odd" / (ODD_ANNOTATED + ".h5ad"), odd_head)
    print(f"nextflow annotation: train (1 layer, 2 epochs; validation macro-F1 {json.loads((head / 'metrics.json').read_text())['macro_f1']:.3f}) "
          f"-> predict 16 cells x 8 classes (macro-F1 {m['macro_f1']:.3f}); embed -> frozen head reusing obsm['X_scfoundation'] -> predict")


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
        "SCFOUNDATION_SPLIT", "SCFOUNDATION_MERGE", "SCFOUNDATION_INIT", "SCFOUNDATION_PRETRAIN",
        "SCFOUNDATION_PRETRAIN_RESUME", "SCFOUNDATION_EMBED_PRETRAINED", "SCFOUNDATION_ANNOTATETRAIN",
        "SCFOUNDATION_ANNOTATEPREDICT", "SCFOUNDATION_ANNOTATETRAIN_FROZEN", "SCFOUNDATION_ANNOTATEPREDICT_FROZEN"}, versions
    odd = {k: exact(results / k, v) for k, v in ODD_NAMES.items()}
    odd_shards = sorted(p.name for p in (results / "scfoundation_split_odd" / "shards").iterdir())
    assert {l.split("\t")[0] for l in versions} >= {"SCFOUNDATION_WEIGHTS_ODD", "SCFOUNDATION_EMBED_ODD",
        "SCFOUNDATION_GENEEMBED_ODD", "SCFOUNDATION_ENHANCE_ODD", "SCFOUNDATION_SPLIT_ODD",
        "SCFOUNDATION_MERGE_ODD", "SCFOUNDATION_PRETRAIN_ODD", "SCFOUNDATION_ANNOTATETRAIN_ODD",
        "SCFOUNDATION_ANNOTATEPREDICT_ODD"}, versions
    check_pretraining(results, stub)
    check_annotation(results, stub)
    if stub:
        assert len(shards) == 2, shards
        assert odd_shards == [f"{ODD_SHARD}_0000{i}.h5ad" for i in range(2)], odd_shards
        print("nextflow modules (stub): outputs present, odd names intact")
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

    # Awkward names: the same results as the plain runs, under the exact expected names.
    assert (results / "weights_odd.tsv").read_text().split() == ["tiny_models.ckpt", TINY_SHA]
    oe = ad.read_h5ad(odd["scfoundation_embed_odd"])
    same_obs(oe)
    prov(oe, mode="cell")
    assert np.array_equal(oe.obsm["X_scfoundation"], e.obsm["X_scfoundation"])
    og = ad.read_h5ad(odd["scfoundation_geneembed_odd"])
    prov(og, mode="gene")
    assert np.array_equal(og.varm["X_scfoundation"], g.varm["X_scfoundation"])
    ox = ad.read_h5ad(odd["scfoundation_enhance_odd"])
    same_obs(ox)
    prov(ox, mode="expression", checkpoint_key="rde", tgthighres="f2")  # withName also selects the alias
    assert ox.shape == x.shape and np.array_equal(np.asarray(ox.X), np.asarray(x.X))
    assert odd_shards == [f"{ODD_SHARD}_0000{i}.h5ad" for i in range(4)], odd_shards
    om = ad.read_h5ad(odd["scfoundation_merge_odd"])
    same_obs(om)
    assert (om.X != src.X).nnz == 0
    print("nextflow modules: outputs checked, odd file names and prefixes intact")
elif mode == "pipeline":
    merged = ad.read_h5ad(one(results / "embeddings", "*.h5ad"))
    whole = ad.read_h5ad(sys.argv[3])
    same_obs(merged)
    prov(merged, merged_files="4")
    d = np.abs(merged.obsm["X_scfoundation"] - whole.obsm["X_scfoundation"]).max()
    assert d <= 1e-5, d
    print(f"example pipeline: split/embed/merge equals embedding the whole file (max abs diff {d:.2e})")
    if len(sys.argv) > 5:
        # Run without -profile test: resourceLimits must have lowered the 8-CPU/32 GB embedding label.
        import csv
        limit = int(sys.argv[5])
        rows = list(csv.DictReader(open(sys.argv[4]), delimiter="\t"))
        embeds = [r for r in rows if "SCFOUNDATION_EMBED" in r["name"]]
        assert len(embeds) == 4 and all(r["status"] == "COMPLETED" for r in rows), rows
        assert all(int(r["cpus"]) <= limit for r in rows), [(r["name"], r["cpus"]) for r in rows]
        assert all(int(r["cpus"]) == min(8, limit) for r in embeds), [(r["name"], r["cpus"]) for r in embeds]
        units = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
        mem = lambda v: int(float(v.split()[0]) * units[v.split()[1]])
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert all(mem(r["memory"]) <= min(32 << 30, machine) for r in rows), [(r["name"], r["memory"]) for r in rows]
        print(f"example pipeline without a profile: every task within {limit} CPUs and this machine's memory "
              f"(embedding tasks: {embeds[0]['cpus']} CPUs, {embeds[0]['memory']})")
else:
    sys.exit(__doc__)

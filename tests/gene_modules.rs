//! `gene-modules`: Leiden against planted partitions and Python's `leidenalg`, the whole command on a
//! small h5ad with the tiny model (outputs byte-identical across runs, read by anndata, module scores
//! and highly variable genes equal to scanpy's), and one-line errors for bad inputs. Needs Python with
//! anndata, scanpy, igraph and leidenalg (SCF_PYTHON, else .venv-ci from ci/setup.sh); the tests that
//! use it fail, never skip, without it.

mod common;

use std::path::Path;

use common::*;
use scfoundation::cluster::knn::{knn_cosine, umap_connectivities};
use scfoundation::cluster::leiden::{
    adjusted_rand_index, leiden, planted_partition, Graph, LeidenOptions,
};
use scfoundation::train::rng::Rng;

/// leidenalg's partition and quality of the same graph.
fn leidenalg(dir: &Path, n: usize, edges: &[(usize, usize, f64)], res: f64) -> (Vec<usize>, f64) {
    let e = dir.join("edges.tsv");
    let body: String = edges
        .iter()
        .map(|(i, j, w)| format!("{i}\t{j}\t{w:?}\n"))
        .collect();
    std::fs::write(&e, body).unwrap();
    let out = dir.join("membership.txt");
    py(&[
        s(&root().join("ci/leiden_compare.py")),
        s(&e),
        &n.to_string(),
        &res.to_string(),
        "1",
        s(&out),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let q: f64 = lines.next().unwrap().parse().unwrap();
    (lines.map(|l| l.parse().unwrap()).collect(), q)
}

fn check_against_leidenalg(name: &str, n: usize, edges: &[(usize, usize, f64)], planted: &[usize]) {
    let d = tmp();
    let g = Graph::from_edges(n, edges).unwrap();
    for res in [1.0, 0.5] {
        let ours = leiden(
            &g,
            &LeidenOptions {
                resolution: res,
                seed: 11,
                ..Default::default()
            },
        )
        .unwrap();
        let again = leiden(
            &g,
            &LeidenOptions {
                resolution: res,
                seed: 11,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            ours.membership, again.membership,
            "{name}: not deterministic"
        );
        let (theirs, q) = leidenalg(d.path(), n, edges, res);
        let ari = adjusted_rand_index(&ours.membership, &theirs);
        let ari_planted = adjusted_rand_index(&ours.membership, planted);
        eprintln!(
            "{name} γ={res}: ours {} communities Q={:.4}, leidenalg {} Q={q:.4}, ARI {ari:.4}, ARI vs planted {ari_planted:.4}",
            ours.n_communities,
            ours.quality,
            theirs.iter().max().unwrap() + 1
        );
        assert!(ari >= 0.9, "{name} γ={res}: ARI with leidenalg {ari}");
        assert!(
            ours.quality >= q - 1e-3 * q.abs(),
            "{name} γ={res}: quality {} below leidenalg's {q}",
            ours.quality
        );
        if res == 1.0 {
            assert!(
                ari_planted >= 0.95,
                "{name}: ARI with the planted partition {ari_planted}"
            );
        }
    }
}

#[test]
fn leiden_recovers_planted_partitions_and_agrees_with_leidenalg() {
    // Unweighted stochastic block model: 6 blocks of 40 nodes.
    let (edges, planted) = planted_partition(6, 40, 0.25, 0.02, 5);
    check_against_leidenalg("sbm", 240, &edges, &planted);

    // Weighted: the UMAP connectivity graph of 5 Gaussian clusters in 16 dimensions, as gene-modules
    // builds it (cosine, k = 15).
    let mut rng = Rng::seed_from_u64(9);
    let centres: Vec<Vec<f64>> = (0..5)
        .map(|_| (0..16).map(|_| rng.normal() * 3.0).collect())
        .collect();
    let mut rows = vec![];
    let mut labels = vec![];
    for (c, centre) in centres.iter().enumerate() {
        for _ in 0..30 {
            rows.push(
                centre
                    .iter()
                    .map(|x| x + rng.normal())
                    .collect::<Vec<f64>>(),
            );
            labels.push(c);
        }
    }
    let (idx, dist) = knn_cosine(&rows, 15).unwrap();
    let edges = umap_connectivities(&idx, &dist);
    check_against_leidenalg("knn", rows.len(), &edges, &labels);
}

fn gm_args(input: &Path, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "gene-modules",
        "--input",
        s(input),
        "--model",
        s(&tiny_model()),
        "--output",
        s(&dir.join("modules.tsv")),
        "--scores-output",
        s(&dir.join("scores.h5ad")),
        "--heatmap",
        s(&dir.join("modules.png")),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

fn run_gm(input: &Path, dir: &Path, extra: &[&str]) {
    let a = gm_args(input, dir, extra);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
}

const OUTPUTS: [&str; 4] = [
    "modules.tsv",
    "modules.tsv.provenance.json",
    "scores.h5ad",
    "modules.png",
];

#[test]
fn end_to_end_outputs_are_reproducible_and_match_scanpy() {
    let input = test_data("pbmc_tiny.h5ad");
    let sel = [
        "--n-hvg",
        "40",
        "--k",
        "8",
        "--groupby",
        "cell_type",
        "--groups",
        "B,NK",
        "--per-group",
        "1",
    ];
    let (a, b) = (tmp(), tmp());
    run_gm(&input, a.path(), &sel);
    run_gm(&input, b.path(), &sel);
    for f in OUTPUTS {
        let (x, y) = (a.path().join(f), b.path().join(f));
        assert!(x.is_file(), "{f} missing");
        assert_eq!(
            std::fs::read(&x).unwrap(),
            std::fs::read(&y).unwrap(),
            "{f} differs between runs"
        );
    }
    let tsv = std::fs::read_to_string(a.path().join("modules.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 41, "{tsv}");
    let prov = std::fs::read_to_string(a.path().join("modules.tsv.provenance.json")).unwrap();
    assert!(prov.contains("\"n_cells_used\": \"2\""), "{prov}");
    // PNG decodes.
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(a.path().join("modules.png")).unwrap(),
    ));
    assert!(dec.read_info().is_ok());
    // Default control-gene draw: anndata reads everything; HVGs as scanpy's.
    py(&[
        s(&root().join("ci/gene_modules_check.py")),
        s(&input),
        s(&a.path().join("modules.tsv")),
        s(&a.path().join("scores.h5ad")),
        "40",
        "0",
    ]);
    // A control size above every bin makes the draw deterministic: scores equal scanpy's score_genes.
    // Another seed draws other cells, so modules may differ; the check reads the modules it is given.
    let c = tmp();
    let mut extra = sel.to_vec();
    extra.extend(["--ctrl-size", "19264", "--seed", "3"]);
    run_gm(&input, c.path(), &extra);
    let out = py(&[
        s(&root().join("ci/gene_modules_check.py")),
        s(&input),
        s(&c.path().join("modules.tsv")),
        s(&c.path().join("scores.h5ad")),
        "40",
        "19264",
    ]);
    eprintln!("{out}");
}

#[test]
fn genes_file_and_csv_input_without_obs() {
    // A genes file with comments, a duplicate and an unknown symbol; input without obs (CSV).
    let d = tmp();
    let genes = d.path().join("genes.txt");
    let tsv =
        std::fs::read_to_string(root().join("src/data/OS_scRNA_gene_index.19264.tsv")).unwrap();
    let names: Vec<&str> = tsv
        .lines()
        .skip(1)
        .take(12)
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let mut body = String::from("# modules\n");
    for n in &names {
        body.push_str(n);
        body.push('\n');
    }
    body.push_str(&format!("{}\nNOT_A_GENE\n", names[0]));
    std::fs::write(&genes, body).unwrap();
    let csv = d.path().join("cells.csv");
    let mut c = format!("id,{}\n", names.join(","));
    for i in 0..3 {
        let row: Vec<String> = (0..names.len())
            .map(|j| ((i * 7 + j * 3) % 5).to_string())
            .collect();
        c.push_str(&format!("cell{i},{}\n", row.join(",")));
    }
    std::fs::write(&csv, c).unwrap();
    let out = d.path().join("o");
    std::fs::create_dir(&out).unwrap();
    let mut a = gm_args(
        &csv,
        &out,
        &["--genes", s(&genes), "--k", "4", "--min-mapped", "0"],
    );
    a.retain(|x| !x.is_empty());
    let o = bin().args(&a).env("RUST_LOG", "warn").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("NOT_A_GENE"), "unknown symbol warned: {err}");
    let t = std::fs::read_to_string(out.join("modules.tsv")).unwrap();
    assert_eq!(t.lines().count(), 13);
    py(&[
        "-c",
        &format!(
            "import anndata; a = anndata.read_h5ad({:?}); assert list(a.obs_names) == ['cell0', 'cell1', 'cell2']; assert 'module_0' in a.obs",
            s(&out.join("scores.h5ad"))
        ),
    ]);
}

#[test]
fn bad_inputs_fail_with_one_line_naming_the_cause() {
    let input = test_data("pbmc_tiny.h5ad");
    let d = tmp();
    let empty = d.path().join("empty.txt");
    std::fs::write(&empty, "# nothing\n\n").unwrap();
    let unknown = d.path().join("unknown.txt");
    std::fs::write(&unknown, "NOPE1\nNOPE2\n").unwrap();
    let few = d.path().join("few.txt");
    std::fs::write(&few, "CD3D\nCD3E\nMS4A1\nLYZ\n").unwrap();
    let huge = d.path().join("huge.txt");
    std::fs::write(&huge, "CD3D\n".repeat(1 << 20)).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--n-hvg", "20", "--groupby", "no_such_column"],
            "no column 'no_such_column'",
        ),
        (vec!["--genes", s(&empty)], "no gene symbols"),
        (vec!["--genes", s(&unknown)], "none of the 2 symbols"),
        (vec!["--genes", s(&huge)], "too large"),
        (
            vec!["--genes", s(&few)],
            "--k 15 must be smaller than the number of genes (4)",
        ),
        (
            vec!["--n-hvg", "20", "--groups", "B"],
            "--groups needs --groupby",
        ),
        (
            vec![
                "--n-hvg",
                "20",
                "--groupby",
                "cell_type",
                "--groups",
                "Martians",
            ],
            "no cells with cell_type == 'Martians'",
        ),
    ];
    for (extra, needle) in cases {
        let o = d.path().join("out");
        let a = gm_args(&input, &o, &extra);
        let out = bin().args(&a).output().unwrap();
        let line = clean_error(&out, needle);
        assert!(!o.join("modules.tsv").exists(), "{line}");
    }
    // Usage errors (clap): --per-group 0, neither --genes nor --n-hvg, wrong extensions.
    for (extra, needle) in [
        (vec!["--n-hvg", "20", "--per-group", "0"], "per-group"),
        (vec![], "--genes"),
    ] {
        let a = gm_args(&input, d.path(), &extra);
        let out = bin().args(&a).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
    }
    let out = bin()
        .args([
            "gene-modules",
            "--input",
            s(&input),
            "--model",
            s(&tiny_model()),
            "--n-hvg",
            "20",
            "--output",
            s(&d.path().join("m.csv")),
        ])
        .output()
        .unwrap();
    clean_error(&out, "must end in .tsv");
}

//! `gene-modules`: gene programmes from gene context embeddings (the paper's gene module analysis).
//!
//! 1. **Cells**: all cells, or with `groupby`/`per_group` up to N cells per group of an obs column,
//!    drawn without replacement with the seed (one stream per group name) and kept in file order.
//! 2. **Genes**: a list of symbols, or the N highly variable genes of the input
//!    ([`genestats::hvg_seurat`]: scanpy's `seurat` flavour on log1p(CP10k) data).
//! 3. **Embeddings**: the decoder's gene context embedding (as `embed --mode gene`) of each chosen gene
//!    in each chosen cell, summed on the fly and averaged: only `genes × width` values are held.
//! 4. **Graph and modules**: cosine kNN graph with UMAP connectivities ([`crate::cluster::knn`]) and
//!    Leiden with the RB configuration quality ([`crate::cluster::leiden`]).
//! 5. **Outputs** (all written to temporary files and moved into place together): a TSV of genes and
//!    modules, optional per-cell module scores (`scanpy.tl.score_genes` semantics) in an h5ad, and an
//!    optional PNG heatmap of mean cosine similarity between modules.
//!
//! Three passes over the input: statistics and validation of every cell, the model on the chosen
//! cells, and (with a scores output) the scores of every cell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::cluster::heatmap::similarity_heatmap_png;
use crate::cluster::knn::{knn_cosine, umap_connectivities};
use crate::cluster::leiden::{leiden, Graph, LeidenOptions};
use crate::data::batch::BatchSize;
use crate::data::genestats::{control_genes, hvg_seurat, GeneStats};
use crate::data::preprocess::{self, CellTokens};
use crate::data::{CellStream, DatasetStats, GeneVocab, PreNormalized, PreprocessOptions, N_GENES};
use crate::fsutil::{refuse_input_as_output, PendingFile};
use crate::io::h5ad::elem::Block;
use crate::io::h5ad::frame::Column;
use crate::io::h5ad::{Frame, H5adWriter, ObsSource};
use crate::io::{Input, MatrixChoice};
use crate::model::heads::CellInput;
use crate::progress::Progress;
use crate::provenance::Provenance;
use crate::train::rng::Rng;
use crate::weights::ModelRef;

use super::embed::{dataset_stats, device_name, load_model, Batching, Workload};

/// A genes file larger than this is refused (19,264 symbols take about 150 KiB).
pub const MAX_GENES_FILE_BYTES: u64 = 4 << 20;
/// Mean-expression bins of the highly-variable-gene selection (scanpy's default `n_bins`).
pub const HVG_BINS: usize = 20;
/// Cells read and preprocessed at a time.
const CHUNK_CELLS: usize = 256;

/// Which genes become modules.
#[derive(Debug, Clone)]
pub enum GeneChoice {
    /// Symbols, one per line (first field), from this file.
    File(PathBuf),
    /// The N most highly variable genes of the input.
    Hvg(usize),
}

#[derive(Debug, Clone)]
pub struct GeneModuleOptions {
    pub genes: GeneChoice,
    /// Obs column whose groups are sampled (needs an h5ad input).
    pub groupby: Option<String>,
    /// At most this many cells per group (or in all, without `groupby`).
    pub per_group: Option<usize>,
    /// Only these groups of `groupby` (empty: all groups).
    pub groups: Vec<String>,
    /// Neighbours per gene, the gene itself included.
    pub k: usize,
    pub resolution: f64,
    pub seed: u64,
    /// `score_genes`: control genes drawn per expression bin, and number of bins.
    pub ctrl_size: usize,
    pub n_bins: usize,
    pub preprocess: PreprocessOptions,
    pub key: String,
    pub batch_size: BatchSize,
    pub min_mapped: f64,
    pub matrix: MatrixChoice,
}

impl GeneModuleOptions {
    /// Defaults of everything but the gene choice (gene-mode embedding defaults, scanpy defaults).
    pub fn new(genes: GeneChoice) -> Self {
        Self {
            genes,
            groupby: None,
            per_group: None,
            groups: vec![],
            k: 15,
            resolution: 1.0,
            seed: 0,
            ctrl_size: 50,
            n_bins: 25,
            preprocess: PreprocessOptions {
                input_type: crate::data::InputType::SingleCell,
                pre_normalized: PreNormalized::F,
                tgthighres: crate::data::TargetResolution::Fixed(4.0),
            },
            key: "gene".into(),
            batch_size: BatchSize::Auto,
            min_mapped: 0.2,
            matrix: MatrixChoice::default(),
        }
    }
}

/// Output paths.
#[derive(Debug, Clone)]
pub struct GeneModuleOutputs {
    /// TSV: gene, module, module_size, degree, intra_similarity, mean_expression.
    pub modules: PathBuf,
    /// h5ad with the input's obs plus `module_<id>` score columns.
    pub scores: Option<PathBuf>,
    /// PNG heatmap of mean cosine similarity between modules.
    pub heatmap: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct GeneModulesSummary {
    pub n_cells_used: usize,
    pub genes: Vec<String>,
    /// Module of each gene in `genes`.
    pub modules: Vec<usize>,
    pub n_modules: usize,
    pub quality: f64,
    pub provenance: Provenance,
}

/// The provenance sidecar of the modules TSV.
pub fn sidecar(tsv: &Path) -> PathBuf {
    let mut s = tsv.as_os_str().to_owned();
    s.push(".provenance.json");
    PathBuf::from(s)
}

fn check_ext(p: &Path, ext: &str, what: &str) -> Result<()> {
    let ok = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext));
    if !ok {
        bail!("{}: {what} must end in .{ext}", p.display());
    }
    Ok(())
}

pub fn validate(opts: &GeneModuleOptions, out: &GeneModuleOutputs, input: &Path) -> Result<()> {
    check_ext(&out.modules, "tsv", "the modules output")?;
    if let Some(p) = &out.scores {
        check_ext(p, "h5ad", "--scores-output")?;
    }
    if let Some(p) = &out.heatmap {
        check_ext(p, "png", "--heatmap")?;
    }
    let mut inputs: Vec<&Path> = vec![input];
    if let GeneChoice::File(f) = &opts.genes {
        inputs.push(f);
    }
    let side = sidecar(&out.modules);
    let outputs: Vec<&Path> = [Some(out.modules.as_path()), Some(side.as_path())]
        .into_iter()
        .chain([out.scores.as_deref(), out.heatmap.as_deref()])
        .flatten()
        .collect();
    for (i, o) in outputs.iter().enumerate() {
        refuse_input_as_output(o, &inputs)?;
        if outputs[..i].iter().any(|p| crate::fsutil::same_file(p, o)) {
            bail!("{}: the same path is given for two outputs", o.display());
        }
    }
    if opts.batch_size == BatchSize::Fixed(0) {
        bail!("--batch-size must be at least 1");
    }
    if opts.k < 2 {
        bail!(
            "--k must be at least 2 (the gene itself counts as a neighbour), got {}",
            opts.k
        );
    }
    if opts.per_group == Some(0) {
        bail!("--per-group must be at least 1");
    }
    if !(opts.resolution.is_finite() && opts.resolution >= 0.0) {
        bail!(
            "--resolution must be a finite number >= 0, got {}",
            opts.resolution
        );
    }
    if opts.ctrl_size == 0 {
        bail!("--ctrl-size must be at least 1");
    }
    if opts.n_bins < 2 {
        bail!("--n-bins must be at least 2");
    }
    if let GeneChoice::Hvg(n) = opts.genes {
        if !(2..=N_GENES).contains(&n) {
            bail!("--n-hvg must be from 2 to {N_GENES}, got {n}");
        }
    }
    if !opts.groups.is_empty() && opts.groupby.is_none() {
        bail!("--groups needs --groupby");
    }
    Ok(())
}

/// Reads a genes file: one symbol per line (the first tab-, comma- or space-separated field), `#`
/// comments and blank lines skipped, duplicates dropped. Returns model gene indices in file order and
/// the file's sha256.
pub fn read_genes_file(path: &Path, vocab: &GeneVocab) -> Result<(Vec<u32>, String)> {
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow!("{}: cannot read genes file: {e}", path.display()))?;
    if !meta.is_file() {
        bail!("{}: genes file is not a regular file", path.display());
    }
    if meta.len() > MAX_GENES_FILE_BYTES {
        bail!(
            "{}: genes file is too large ({} bytes; at most {MAX_GENES_FILE_BYTES}, one symbol per line)",
            path.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow!("{}: cannot read genes file: {e}", path.display()))?;
    let sha = hex(&Sha256::digest(&bytes));
    let text = String::from_utf8_lossy(&bytes);
    let mut symbols: Vec<&str> = vec![];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sym = line
            .split(|c: char| c == '\t' || c == ',' || c.is_whitespace())
            .next()
            .unwrap_or("")
            .trim_matches('"');
        if !sym.is_empty() {
            symbols.push(sym);
        }
    }
    if symbols.is_empty() {
        bail!("{}: genes file has no gene symbols", path.display());
    }
    let mut seen = std::collections::HashSet::new();
    let mut genes = vec![];
    let mut unknown = vec![];
    let mut dup = 0;
    for s in &symbols {
        match vocab.get(s) {
            Some(g) => {
                if seen.insert(g) {
                    genes.push(g);
                } else {
                    dup += 1;
                }
            }
            None => unknown.push(*s),
        }
    }
    if genes.is_empty() {
        bail!(
            "{}: none of the {} symbols is an scFoundation gene (first: {}); expected HGNC symbols, one per line",
            path.display(),
            symbols.len(),
            symbols.iter().take(3).copied().collect::<Vec<_>>().join(", ")
        );
    }
    if !unknown.is_empty() {
        log::warn!(
            "{}: {} of {} symbols are not scFoundation genes and are dropped: {}{}",
            path.display(),
            unknown.len(),
            symbols.len(),
            unknown
                .iter()
                .take(10)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            if unknown.len() > 10 { ", ..." } else { "" }
        );
    }
    if dup > 0 {
        log::warn!("{}: {dup} repeated symbols ignored", path.display());
    }
    Ok((genes, sha))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A group's name, cells used and cells in it.
type GroupUse = (String, usize, usize);

/// Which cells feed the embeddings: a mask over cells plus the number used per group.
fn choose_cells(
    stream: &CellStream,
    obs: Option<&Frame>,
    opts: &GeneModuleOptions,
) -> Result<(Vec<bool>, Vec<GroupUse>)> {
    let n = stream.n_cells();
    let file = stream.input.path.display().to_string();
    let labels: Vec<String> = match &opts.groupby {
        None => vec![String::new(); n],
        Some(col) => {
            let obs = obs.ok_or_else(|| {
                anyhow!(
                    "{file}: --groupby needs an .h5ad input (other formats have no obs columns)"
                )
            })?;
            let c = obs
                .column(col)
                .with_context(|| format!("{file}: --groupby"))?;
            c.strings()
                .with_context(|| format!("{file}: obs column '{col}' cannot be used for --groupby (expected categories or strings)"))?
        }
    };
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut missing = 0usize;
    for (i, l) in labels.iter().enumerate() {
        if opts.groupby.is_some() && l.is_empty() {
            missing += 1;
            continue;
        }
        groups.entry(l.as_str()).or_default().push(i);
    }
    if missing > 0 {
        log::warn!(
            "{file}: {missing} cells have no value in the --groupby column and are not used"
        );
    }
    if !opts.groups.is_empty() {
        for g in &opts.groups {
            if !groups.contains_key(g.as_str()) {
                bail!(
                    "{file}: no cells with {} == '{g}' (groups: {})",
                    opts.groupby.as_deref().unwrap_or(""),
                    groups
                        .keys()
                        .take(20)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        groups.retain(|k, _| opts.groups.iter().any(|g| g == k));
    }
    let mut mask = vec![false; n];
    let mut used = vec![];
    for (name, mut cells) in groups {
        let total = cells.len();
        if let Some(m) = opts.per_group {
            if m < cells.len() {
                let mut rng = Rng::derive(opts.seed, &format!("gene-modules/cells/{name}"), 0);
                for i in 0..m {
                    let j = i + rng.below((cells.len() - i) as u64) as usize;
                    cells.swap(i, j);
                }
                cells.truncate(m);
            }
        }
        for &c in &cells {
            mask[c] = true;
        }
        used.push((name.to_string(), cells.len(), total));
    }
    if !mask.iter().any(|&m| m) {
        bail!("{file}: no cells selected");
    }
    Ok((mask, used))
}

/// Preprocesses a chunk of cells, naming the cell in errors.
fn tokens_of(
    stream: &CellStream,
    cells: &[(usize, crate::data::AlignedCell)],
    opts: &GeneModuleOptions,
    stats: &DatasetStats,
) -> Result<Vec<(usize, CellTokens)>> {
    let file = stream.input.path.display().to_string();
    cells
        .iter()
        .map(|(i, c)| {
            let what = format!("{file}: cell '{}' (row {})", stream.cell_id(*i), i + 1);
            Ok((
                *i,
                preprocess::preprocess(c, &opts.preprocess, stats, &what)?,
            ))
        })
        .collect()
}

pub fn gene_modules(
    input_path: &Path,
    model_ref: &ModelRef,
    out: &GeneModuleOutputs,
    opts: &GeneModuleOptions,
    device: &Device,
) -> Result<GeneModulesSummary> {
    validate(opts, out, input_path)?;
    let vocab = GeneVocab::builtin();
    let file_genes = match &opts.genes {
        GeneChoice::File(p) => Some(read_genes_file(p, &vocab)?),
        GeneChoice::Hvg(_) => None,
    };
    let input = Input::open(input_path, &opts.matrix)?;
    let total_last = opts.preprocess.pre_normalized == PreNormalized::A;
    let mut stream = CellStream::new(input, &vocab, total_last, opts.min_mapped)?;
    let file = input_path.display().to_string();
    let obs = stream.input.obs()?;
    let (chosen, used) = choose_cells(&stream, obs.as_ref(), opts)?;
    let n_used = chosen.iter().filter(|&&c| c).count();
    for (g, k, t) in &used {
        if opts.groupby.is_some() {
            log::info!("{file}: group '{g}': {k} of {t} cells used");
        }
    }
    let bulk_stats = if DatasetStats::needs_pass(&opts.preprocess) {
        dataset_stats(&mut stream)?
    } else {
        DatasetStats::default()
    };

    // Pass 1: every cell validated and preprocessed; per-gene statistics.
    let mut stats = GeneStats::new(N_GENES);
    loop {
        let cells = stream.next_cells(CHUNK_CELLS)?;
        if cells.is_empty() {
            break;
        }
        for (_, t) in tokens_of(&stream, &cells, opts, &bulk_stats)? {
            let k = t.positions.partition_point(|&p| (p as usize) < N_GENES);
            stats.add_cell(&t.positions[..k], &t.values[..k]);
        }
    }
    stream.rewind()?;
    let mut pool: Vec<u32> = stream
        .alignment
        .column_to_gene
        .iter()
        .flatten()
        .copied()
        .collect();
    pool.sort_unstable();
    pool.dedup();
    let in_pool = |g: u32| pool.binary_search(&g).is_ok();

    let genes: Vec<u32> = match (&opts.genes, &file_genes) {
        (GeneChoice::File(p), Some((g, _))) => {
            let absent: Vec<&str> = g
                .iter()
                .filter(|&&x| !in_pool(x))
                .map(|&x| vocab.names()[x as usize].as_str())
                .collect();
            if !absent.is_empty() {
                log::warn!(
                    "{}: {} genes are not measured in {file} (zero expression there; embedded, but not scored): {}{}",
                    p.display(),
                    absent.len(),
                    absent.iter().take(10).copied().collect::<Vec<_>>().join(", "),
                    if absent.len() > 10 { ", ..." } else { "" }
                );
            }
            g.clone()
        }
        (GeneChoice::Hvg(n), _) => hvg_seurat(&stats, &pool, *n, HVG_BINS)
            .with_context(|| format!("{file}: highly variable genes"))?,
        _ => unreachable!("file genes are read above"),
    };
    let n_genes = genes.len();
    if opts.k >= n_genes {
        let src = match &opts.genes {
            GeneChoice::File(p) => p.display().to_string(),
            GeneChoice::Hvg(_) => file.clone(),
        };
        bail!(
            "{src}: --k {} must be smaller than the number of genes ({n_genes})",
            opts.k
        );
    }
    log::info!("{n_genes} genes, {n_used} cells");

    // Pass 2: mean gene context embeddings over the chosen cells.
    let model = load_model(model_ref, &opts.key, device, candle_core::DType::F32)?;
    let width = model.config().decoder.hidden_dim;
    let workload = Workload::Decoder {
        host_bytes_per_cell: (n_genes * width * 4) as u64,
    };
    let mut batching = Batching::new(opts.batch_size, workload, &model, device)?;
    let mut sums = vec![0f64; n_genes * width];
    let mut progress = Progress::new(n_used as u64, "cells", &file);
    loop {
        let cells = stream.next_cells(CHUNK_CELLS)?;
        if cells.is_empty() {
            break;
        }
        let cells: Vec<_> = cells.into_iter().filter(|(i, _)| chosen[*i]).collect();
        if cells.is_empty() {
            continue;
        }
        let tokens: Vec<CellTokens> = tokens_of(&stream, &cells, opts, &bulk_stats)?
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        accumulate(
            &model,
            &tokens,
            &genes,
            &mut batching,
            device,
            &mut sums,
            &mut progress,
        )
        .with_context(|| format!("running the model on {file}"))?;
    }
    progress.finish();
    stream.rewind()?;
    let emb: Vec<Vec<f64>> = sums
        .chunks(width)
        .map(|r| r.iter().map(|s| s / n_used as f64).collect())
        .collect();

    // Graph and Leiden.
    let (idx, dists) = knn_cosine(&emb, opts.k)?;
    let edges = umap_connectivities(&idx, &dists);
    let graph = Graph::from_edges(n_genes, &edges)?;
    let part = leiden(
        &graph,
        &LeidenOptions {
            resolution: opts.resolution,
            seed: opts.seed,
            ..Default::default()
        },
    )?;
    let n_modules = part.n_communities;
    log::info!(
        "{n_modules} modules (Leiden quality {:.6}, {} iterations)",
        part.quality,
        part.iterations
    );
    let sim = Similarity::new(&emb, &part.membership, n_modules);

    let names: Vec<String> = genes
        .iter()
        .map(|&g| vocab.names()[g as usize].clone())
        .collect();
    let mut prov = provenance(opts, model_ref, input_path, &stream, file_genes.as_ref());
    prov.set("device", device_name(device));
    batching.record(&mut prov);
    prov.set("n_cells_used", n_used);
    prov.set("n_genes", n_genes);
    prov.set("n_modules", n_modules);
    prov.set("leiden_quality", format!("{:.9}", part.quality));
    prov.set("leiden_iterations", part.iterations);

    // Outputs, moved into place together at the end.
    let mut pending = vec![];
    let tsv = PendingFile::new(&out.modules)?;
    let mean_expr: Vec<Option<f64>> = genes
        .iter()
        .map(|&g| in_pool(g).then(|| stats.mean_log(g as usize)))
        .collect();
    std::fs::write(
        tsv.path(),
        modules_tsv(&names, &part.membership, graph.degrees(), &sim, &mean_expr),
    )
    .with_context(|| format!("writing {}", out.modules.display()))?;
    pending.push(tsv);
    let side = PendingFile::new(&sidecar(&out.modules))?;
    let json: serde_json::Map<String, serde_json::Value> = prov
        .entries()
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    std::fs::write(side.path(), serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", side.target().display()))?;
    pending.push(side);
    if let Some(p) = &out.heatmap {
        let png = PendingFile::new(p)?;
        std::fs::write(png.path(), similarity_heatmap_png(&sim.modules, n_modules)?)
            .with_context(|| format!("writing {}", p.display()))?;
        pending.push(png);
    }
    if let Some(p) = &out.scores {
        let scores = score_cells(
            &mut stream,
            opts,
            &bulk_stats,
            &stats,
            &pool,
            &genes,
            &part.membership,
            n_modules,
        )?;
        let h5 = PendingFile::new(p)?;
        write_scores(
            h5.path(),
            obs.as_ref(),
            &stream,
            &scores,
            &names,
            &part.membership,
            n_modules,
            &prov,
        )
        .with_context(|| format!("writing {}", p.display()))?;
        pending.push(h5);
    }
    PendingFile::commit_all(pending)?;
    log::info!(
        "{}: {n_genes} genes in {n_modules} modules",
        out.modules.display()
    );
    Ok(GeneModulesSummary {
        n_cells_used: n_used,
        genes: names,
        modules: part.membership,
        n_modules,
        quality: part.quality,
        provenance: prov,
    })
}

/// Runs the model on `tokens` in length buckets and adds each cell's chosen-gene rows to `sums`.
fn accumulate(
    model: &crate::model::MaeAutobin,
    tokens: &[CellTokens],
    genes: &[u32],
    batching: &mut Batching,
    device: &Device,
    sums: &mut [f64],
    progress: &mut Progress,
) -> Result<()> {
    let gathered: Vec<(Vec<f32>, Vec<u32>)> = tokens.iter().map(CellTokens::gathered).collect();
    let lens: Vec<usize> = gathered.iter().map(|g| g.0.len()).collect();
    // Rows are added as each batch comes back (in the fixed bucket order, so the sums are the same on
    // every run): at most one batch of `batch × genes × width` values is held.
    let run = |ids: &[usize]| -> Result<Vec<Vec<f32>>> {
        let dense: Vec<Vec<f32>> = ids.iter().map(|&k| tokens[k].dense()).collect();
        let cells: Vec<CellInput> = ids
            .iter()
            .enumerate()
            .map(|(j, &k)| CellInput {
                values: &gathered[k].0,
                positions: &gathered[k].1,
                full: &dense[j],
            })
            .collect();
        model.gene_hidden_subset(&cells, genes, device)
    };
    batching.run(&lens, device, run, |ids, rows| {
        for r in rows {
            for (s, v) in sums.iter_mut().zip(&r) {
                *s += *v as f64;
            }
        }
        progress.inc(ids.len() as u64);
        Ok(())
    })
}

/// Cosine similarities through unit vectors and per-module sums, in O(genes × width).
struct Similarity {
    /// Mean cosine similarity of each gene to the other genes of its module (NaN when alone).
    intra: Vec<f64>,
    /// Module × module mean cosine similarity (row-major); the diagonal averages distinct pairs
    /// (1 for a one-gene module).
    modules: Vec<f64>,
}

impl Similarity {
    fn new(emb: &[Vec<f64>], membership: &[usize], n_modules: usize) -> Self {
        let width = emb.first().map_or(0, Vec::len);
        let unit: Vec<Vec<f64>> = emb
            .iter()
            .map(|r| {
                let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                r.iter()
                    .map(|x| if n > 0.0 { x / n } else { 0.0 })
                    .collect()
            })
            .collect();
        let mut sum = vec![vec![0f64; width]; n_modules];
        let mut size = vec![0usize; n_modules];
        for (u, &m) in unit.iter().zip(membership) {
            for (s, x) in sum[m].iter_mut().zip(u) {
                *s += x;
            }
            size[m] += 1;
        }
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let self_dot: Vec<f64> = unit.iter().map(|u| dot(u, u)).collect();
        let mut self_sum = vec![0f64; n_modules];
        for (i, &m) in membership.iter().enumerate() {
            self_sum[m] += self_dot[i];
        }
        let intra = unit
            .iter()
            .zip(membership)
            .zip(&self_dot)
            .map(|((u, &m), sd)| {
                if size[m] < 2 {
                    f64::NAN
                } else {
                    (dot(u, &sum[m]) - sd) / (size[m] - 1) as f64
                }
            })
            .collect();
        let mut modules = vec![0f64; n_modules * n_modules];
        for a in 0..n_modules {
            for b in 0..n_modules {
                let v = if a == b {
                    if size[a] < 2 {
                        1.0
                    } else {
                        let n = size[a] as f64;
                        (dot(&sum[a], &sum[a]) - self_sum[a]) / (n * (n - 1.0))
                    }
                } else {
                    dot(&sum[a], &sum[b]) / (size[a] * size[b]) as f64
                };
                modules[a * n_modules + b] = v;
            }
        }
        Self { intra, modules }
    }
}

fn fmt6(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else {
        format!("{v:.6}")
    }
}

/// The modules table, sorted by module, then decreasing intra-module similarity, then gene.
fn modules_tsv(
    names: &[String],
    membership: &[usize],
    degree: &[f64],
    sim: &Similarity,
    mean_expr: &[Option<f64>],
) -> String {
    let mut size = BTreeMap::new();
    for &m in membership {
        *size.entry(m).or_insert(0usize) += 1;
    }
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|&a, &b| {
        membership[a]
            .cmp(&membership[b])
            .then_with(|| {
                let (x, y) = (sim.intra[a], sim.intra[b]);
                // NaN (one-gene module) last.
                y.is_nan().cmp(&x.is_nan()).reverse().then(y.total_cmp(&x))
            })
            .then_with(|| names[a].cmp(&names[b]))
    });
    let mut s =
        String::from("gene\tmodule\tmodule_size\tdegree\tintra_similarity\tmean_expression\n");
    for i in order {
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            names[i],
            membership[i],
            size[&membership[i]],
            fmt6(degree[i]),
            fmt6(sim.intra[i]),
            fmt6(mean_expr[i].unwrap_or(f64::NAN))
        ));
    }
    s
}

/// Per-cell module scores (`scanpy.tl.score_genes`): the mean log1p-normalised expression of the
/// module's measured genes minus that of its control genes. Returns `[module][cell]`.
#[allow(clippy::too_many_arguments)]
fn score_cells(
    stream: &mut CellStream,
    opts: &GeneModuleOptions,
    bulk_stats: &DatasetStats,
    stats: &GeneStats,
    pool: &[u32],
    genes: &[u32],
    membership: &[usize],
    n_modules: usize,
) -> Result<Vec<Vec<f64>>> {
    let means: Vec<f64> = pool.iter().map(|&g| stats.mean_log(g as usize)).collect();
    let mut sets: Vec<(Vec<u32>, Vec<u32>)> = vec![];
    for m in 0..n_modules {
        let mut list: Vec<u32> = genes
            .iter()
            .zip(membership)
            .filter(|(&g, &mm)| mm == m && pool.binary_search(&g).is_ok())
            .map(|(&g, _)| g)
            .collect();
        list.sort_unstable();
        let mut rng = Rng::derive(opts.seed, "gene-modules/score_genes", m as u64);
        let ctrl = control_genes(pool, &means, &list, opts.ctrl_size, opts.n_bins, &mut rng);
        if list.is_empty() {
            log::warn!("module {m}: none of its genes is measured in the input; its score is NaN");
        } else if ctrl.is_empty() {
            log::warn!("module {m}: no control genes in its expression bins; its score is NaN");
        }
        log::debug!(
            "module {m}: {} genes scored, {} control genes",
            list.len(),
            ctrl.len()
        );
        sets.push((list, ctrl));
    }
    let n = stream.n_cells();
    let mut out = vec![Vec::with_capacity(n); n_modules];
    let mean_of = |d: &[f32], set: &[u32]| -> f64 {
        if set.is_empty() {
            return f64::NAN;
        }
        set.iter().map(|&g| d[g as usize] as f64).sum::<f64>() / set.len() as f64
    };
    loop {
        let cells = stream.next_cells(CHUNK_CELLS)?;
        if cells.is_empty() {
            break;
        }
        for (_, t) in tokens_of(stream, &cells, opts, bulk_stats)? {
            let d = t.dense();
            for (m, (list, ctrl)) in sets.iter().enumerate() {
                out[m].push(mean_of(&d, list) - mean_of(&d, ctrl));
            }
        }
    }
    Ok(out)
}

/// The scores h5ad: the input's obs (or the cell ids) plus `module_<id>` float64 columns, no X and no
/// var; `uns['scfoundation']` is the provenance, `uns['scfoundation_modules']` maps `module_<id>` to its
/// genes (comma-separated).
#[allow(clippy::too_many_arguments)]
fn write_scores(
    path: &Path,
    obs: Option<&Frame>,
    stream: &CellStream,
    scores: &[Vec<f64>],
    names: &[String],
    membership: &[usize],
    n_modules: usize,
    prov: &Provenance,
) -> Result<()> {
    let mut frame = match obs {
        Some(f) => f.clone(),
        None => Frame {
            index_name: "_index".into(),
            index: stream.input.cell_ids().to_vec(),
            columns: vec![],
        },
    };
    for (m, s) in scores.iter().enumerate() {
        let name = format!("module_{m}");
        if frame.columns.iter().any(|(n, _)| *n == name) {
            log::warn!("obs column '{name}' of the input is replaced by the module score");
            frame.columns.retain(|(n, _)| *n != name);
        }
        let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[s.len()]), s.clone())?;
        frame.columns.push((name, Column::Array(Block::F64(arr))));
    }
    let w = H5adWriter::create(path)?;
    w.write_obs(ObsSource::Frame(&frame))?;
    w.write_var(&[])?;
    w.ensure_dicts()?;
    w.write_uns_strings("scfoundation", prov.entries())?;
    let lists: Vec<(String, String)> = (0..n_modules)
        .map(|m| {
            let g: Vec<&str> = names
                .iter()
                .zip(membership)
                .filter(|(_, &mm)| mm == m)
                .map(|(n, _)| n.as_str())
                .collect();
            (format!("module_{m}"), g.join(","))
        })
        .collect();
    w.write_uns_strings("scfoundation_modules", &lists)?;
    w.close()
}

fn provenance(
    opts: &GeneModuleOptions,
    model_ref: &ModelRef,
    input_path: &Path,
    stream: &CellStream,
    file_genes: Option<&(Vec<u32>, String)>,
) -> Provenance {
    let mut p = Provenance::new("gene-modules").with_model(model_ref, &opts.key);
    let base = |p: &Path| {
        p.file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    p.set("input", base(input_path));
    match &opts.genes {
        GeneChoice::File(f) => {
            p.set("genes", format!("file:{}", base(f)));
            if let Some((_, sha)) = file_genes {
                p.set("genes_sha256", sha);
            }
        }
        GeneChoice::Hvg(n) => {
            p.set("genes", "hvg");
            p.set("n_hvg", n);
            p.set("hvg_method", "scanpy seurat flavour on log1p(CP10k), 20 mean bins, exactly N (ties: model gene order)");
        }
    }
    if let Some(g) = &opts.groupby {
        p.set("groupby", g);
    }
    if let Some(n) = opts.per_group {
        p.set("per_group", n);
    }
    if !opts.groups.is_empty() {
        p.set("groups", opts.groups.join(","));
    }
    p.set("k", opts.k);
    p.set("graph", "cosine kNN (self included), UMAP connectivities");
    p.set("clustering", "leiden, RBConfiguration");
    p.set("resolution", opts.resolution);
    p.set("seed", opts.seed);
    p.set("ctrl_size", opts.ctrl_size);
    p.set("n_bins", opts.n_bins);
    crate::steps::embed::record_reading(
        &mut p,
        &opts.preprocess,
        opts.batch_size,
        opts.min_mapped,
        &opts.matrix,
        stream,
    );
    p
}

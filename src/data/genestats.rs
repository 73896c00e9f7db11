//! Per-gene statistics over a dataset, and the two scanpy procedures built on them:
//! - [`hvg_seurat`]: highly variable genes as `scanpy.pp.highly_variable_genes(flavor="seurat",
//!   n_top_genes=N)` on log1p-normalised data;
//! - [`control_genes`]: the expression-matched control set of `scanpy.tl.score_genes`.
//!
//! Genes are model gene indices; the *pool* is the set of model genes the input measures (its columns
//! that map to scFoundation genes), playing the role of scanpy's `var_names`.

use anyhow::{bail, Result};

use crate::train::rng::Rng;

/// Running per-gene sums over cells of log1p-normalised values `x` (as scanpy's `X` after
/// `normalize_total` + `log1p`): Σx, Σexpm1(x) and Σexpm1(x)².
#[derive(Debug, Clone)]
pub struct GeneStats {
    pub n_cells: usize,
    sum_log: Vec<f64>,
    sum_lin: Vec<f64>,
    sum_lin_sq: Vec<f64>,
}

impl GeneStats {
    pub fn new(n_genes: usize) -> Self {
        Self {
            n_cells: 0,
            sum_log: vec![0.0; n_genes],
            sum_lin: vec![0.0; n_genes],
            sum_lin_sq: vec![0.0; n_genes],
        }
    }

    /// Adds one cell given as (gene, value) pairs; genes not listed are 0.
    pub fn add_cell(&mut self, genes: &[u32], values: &[f32]) {
        for (&g, &v) in genes.iter().zip(values) {
            let (g, v) = (g as usize, v as f64);
            self.sum_log[g] += v;
            let lin = v.exp_m1();
            self.sum_lin[g] += lin;
            self.sum_lin_sq[g] += lin * lin;
        }
        self.n_cells += 1;
    }

    /// Mean of the log1p values of gene `g` over all cells (scanpy's `obs_avg` in `score_genes`).
    pub fn mean_log(&self, g: usize) -> f64 {
        self.sum_log[g] / self.n_cells.max(1) as f64
    }
}

/// Highly variable genes, scanpy's `flavor="seurat"`: on `expm1(x)` per gene, mean μ and variance σ²
/// (ddof 1); dispersion `log(σ²/μ)` (μ = 0 taken as 1e-12; dispersion 0 → NaN); genes binned by
/// `log1p(μ)` into `n_bins` equal-width bins (`pandas.cut`); dispersion normalised per bin
/// `(d − mean_bin) / std_bin` (a bin with one gene gives 1); the `n_top` genes of highest normalised
/// dispersion, NaN excluded. Unlike scanpy, which keeps every gene tied with the N-th, exactly
/// `n_top` are returned: ties go to the lower model gene index. Returns genes by decreasing rank.
pub fn hvg_seurat(
    stats: &GeneStats,
    pool: &[u32],
    n_top: usize,
    n_bins: usize,
) -> Result<Vec<u32>> {
    let n = stats.n_cells as f64;
    if stats.n_cells < 2 {
        bail!("highly variable genes need at least 2 cells");
    }
    let mut means = Vec::with_capacity(pool.len());
    let mut disp = Vec::with_capacity(pool.len());
    for &g in pool {
        let g = g as usize;
        let mut mean = stats.sum_lin[g] / n;
        let var = (stats.sum_lin_sq[g] / n - mean * mean) * n / (n - 1.0);
        if mean == 0.0 {
            mean = 1e-12;
        }
        let mut d = var / mean;
        if d == 0.0 {
            d = f64::NAN;
        }
        disp.push(d.ln());
        means.push(mean.ln_1p());
    }
    let bins = cut(&means, n_bins);
    let mut per_bin: Vec<Vec<f64>> = vec![vec![]; n_bins];
    for (b, &d) in bins.iter().zip(&disp) {
        if !d.is_nan() {
            per_bin[*b].push(d);
        }
    }
    let stat: Vec<(f64, f64)> = per_bin
        .iter()
        .map(|v| {
            let k = v.len() as f64;
            let avg = v.iter().sum::<f64>() / k;
            let dev = (v.iter().map(|x| (x - avg) * (x - avg)).sum::<f64>() / (k - 1.0)).sqrt();
            if v.len() < 2 {
                // pandas' std of one value is NaN: scanpy then divides by the mean, from 0.
                (0.0, avg)
            } else {
                (avg, dev)
            }
        })
        .collect();
    let mut ranked: Vec<(f64, u32)> = pool
        .iter()
        .zip(&bins)
        .zip(&disp)
        .filter_map(|((&g, &b), &d)| {
            let (avg, dev) = stat[b];
            let z = (d - avg) / dev;
            (!z.is_nan()).then_some((z, g))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    if ranked.len() < n_top {
        log::warn!(
            "only {} genes have a normalised dispersion; all of them are used instead of {n_top}",
            ranked.len()
        );
    }
    Ok(ranked.into_iter().take(n_top).map(|(_, g)| g).collect())
}

/// `pandas.cut(x, bins=n)` labels: `n` equal-width bins over [min, max], right-closed, the lowest
/// edge moved down by 0.1 % of the range (numpy's `linspace` edges).
fn cut(x: &[f64], n: usize) -> Vec<usize> {
    let mn = x.iter().copied().fold(f64::INFINITY, f64::min);
    let mx = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !(mn.is_finite() && mx.is_finite()) {
        return vec![0; x.len()];
    }
    let (mn, mx) = if mn == mx {
        // pandas widens a zero range by 0.1 % on each side.
        let adj = if mn != 0.0 { mn.abs() * 0.001 } else { 0.001 };
        (mn - adj, mx + adj)
    } else {
        (mn, mx)
    };
    let step = (mx - mn) / n as f64;
    let mut edges: Vec<f64> = (0..=n).map(|i| i as f64 * step + mn).collect();
    edges[n] = mx;
    edges[0] -= (mx - mn) * 0.001;
    x.iter()
        .map(|&v| {
            // searchsorted(edges, v, side="left") - 1
            let pos = edges.partition_point(|&e| e < v);
            pos.saturating_sub(1).min(n - 1)
        })
        .collect()
}

/// Control genes of `scanpy.tl.score_genes` (`ctrl_as_ref=True`): pool genes ranked by mean
/// expression (`rank(method="min")`), cut into bins of `round(|pool| / (n_bins − 1))` ranks; for every
/// bin holding a gene of `gene_list`, `ctrl_size` genes of that bin are drawn without replacement (all
/// of them when the bin is smaller), genes of `gene_list` are then removed, and the union is returned
/// (sorted). The draw uses `rng` (partial Fisher–Yates over the bin's genes in model order), not
/// numpy's generator, so the random choice differs from scanpy's while following the same law; with
/// `ctrl_size` ≥ every bin size the result is exactly scanpy's.
pub fn control_genes(
    pool: &[u32],
    means: &[f64],
    gene_list: &[u32],
    ctrl_size: usize,
    n_bins: usize,
    rng: &mut Rng,
) -> Vec<u32> {
    // rank(method="min"): 1 + number of genes with a strictly smaller mean.
    let mut sorted: Vec<f64> = means.iter().copied().filter(|m| m.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n_items =
        ((sorted.len() as f64 / (n_bins.max(2) - 1) as f64).round_ties_even() as usize).max(1);
    let cut_of = |m: f64| (1 + sorted.partition_point(|&s| s < m)) / n_items;
    let cuts: Vec<Option<usize>> = means
        .iter()
        .map(|&m| m.is_finite().then(|| cut_of(m)))
        .collect();
    let in_list = |g: u32| gene_list.binary_search(&g).is_ok();
    let mut wanted: Vec<usize> = pool
        .iter()
        .zip(&cuts)
        .filter(|(&g, c)| c.is_some() && in_list(g))
        .map(|(_, c)| c.unwrap())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut out = vec![];
    for cut in wanted {
        let mut r: Vec<u32> = pool
            .iter()
            .zip(&cuts)
            .filter(|(_, c)| **c == Some(cut))
            .map(|(&g, _)| g)
            .collect();
        if ctrl_size < r.len() {
            for i in 0..ctrl_size {
                let j = i + rng.below((r.len() - i) as u64) as usize;
                r.swap(i, j);
            }
            r.truncate(ctrl_size);
        }
        out.extend(r.into_iter().filter(|&g| !in_list(g)));
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_matches_pandas() {
        // pandas.cut([0, 1, 2, 3, 4, 10], 5) -> codes [0, 0, 0, 1, 1, 4]
        assert_eq!(
            cut(&[0.0, 1.0, 2.0, 3.0, 4.0, 10.0], 5),
            vec![0, 0, 0, 1, 1, 4]
        );
        assert_eq!(cut(&[3.0, 3.0], 4), vec![1, 1]);
    }

    #[test]
    fn control_genes_by_bins() {
        // 10 genes, means 0..9; n_bins 6 -> n_items = round(10/5) = 2; cut = rank // 2.
        let pool: Vec<u32> = (0..10).collect();
        let means: Vec<f64> = (0..10).map(|m| m as f64).collect();
        let mut rng = Rng::seed_from_u64(0);
        // Gene 4 has rank 5 -> cut 2, whose genes are ranks 4, 5 (genes 3, 4).
        assert_eq!(control_genes(&pool, &means, &[4], 50, 6, &mut rng), vec![3]);
        // A draw of 1 from {3, 4}: gene 4 is removed afterwards, so 0 or 1 genes remain.
        let c = control_genes(&pool, &means, &[4], 1, 6, &mut rng);
        assert!(c.is_empty() || c == vec![3]);
    }

    #[test]
    fn hvg_prefers_overdispersed_genes() {
        let mut st = GeneStats::new(4);
        // Gene 0 constant, gene 1 mildly variable, gene 2 strongly variable, gene 3 absent.
        for c in 0..20 {
            let v1 = 1.0 + (c % 2) as f32 * 0.2;
            let v2 = if c % 5 == 0 { 4.0 } else { 0.1 };
            st.add_cell(&[0, 1, 2], &[1.0, v1, v2]);
        }
        let top = hvg_seurat(&st, &[0, 1, 2, 3], 2, 20).unwrap();
        assert_eq!(top.len(), 2);
        assert!(top.contains(&2), "{top:?}");
        assert!(!top.contains(&3), "an unexpressed gene has no dispersion");
    }
}

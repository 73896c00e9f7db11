//! The neighbour graph over embeddings, as `scanpy.pp.neighbors(metric="cosine")` builds it with its
//! default UMAP method:
//! 1. each item's `k` nearest items by cosine distance `1 − cos`, **the item itself included** (scanpy's
//!    `n_neighbors` counts the cell itself), exact (all pairs), ties broken by index;
//! 2. UMAP's fuzzy simplicial set (`umap.umap_.fuzzy_simplicial_set`, `local_connectivity = 1`):
//!    per item, `ρ` = distance to the nearest other item and `σ` found by bisection (64 steps, tolerance
//!    1e-5) so that `Σ_j exp(−max(0, d_j − ρ) / σ) = log2(k)` over the non-self neighbours, with σ at
//!    least 1e-3 × the mean neighbour distance; directed weight `exp(−(d − ρ)/σ)` (1 at or below ρ);
//! 3. symmetrised by the fuzzy union `w_ij = a_ij + a_ji − a_ij · a_ji`.
//!
//! The result is scanpy's `obsp['connectivities']`, an undirected weighted graph used by Leiden.

use anyhow::{bail, Result};

/// Per item, its neighbours' indices and their distances (same order: itself first, then nearest).
pub type Neighbours = (Vec<Vec<usize>>, Vec<Vec<f64>>);

/// Each row's `k` nearest rows (itself first) by cosine distance, with the distances. Rows are L2
/// normalised here; an all-zero row has distance 1 to everything (and 0 to itself).
pub fn knn_cosine(rows: &[Vec<f64>], k: usize) -> Result<Neighbours> {
    let n = rows.len();
    if k < 2 || k > n {
        bail!("k = {k} neighbours needs 2 <= k <= the number of items ({n})");
    }
    let unit: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let norm = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 0.0 {
                r.iter().map(|x| x / norm).collect()
            } else {
                vec![0.0; r.len()]
            }
        })
        .collect();
    let mut indices = Vec::with_capacity(n);
    let mut dists = Vec::with_capacity(n);
    let mut all: Vec<(f64, usize)> = Vec::with_capacity(n);
    for i in 0..n {
        all.clear();
        for j in 0..n {
            let d = if i == j {
                0.0
            } else {
                let c: f64 = unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum();
                (1.0 - c).max(0.0)
            };
            all.push((d, j));
        }
        // The item itself first, then by distance, then by index.
        all.select_nth_unstable_by(k - 1, |a, b| key(i, a).partial_cmp(&key(i, b)).unwrap());
        let mut top = all[..k].to_vec();
        top.sort_by(|a, b| key(i, a).partial_cmp(&key(i, b)).unwrap());
        indices.push(top.iter().map(|&(_, j)| j).collect());
        dists.push(top.iter().map(|&(d, _)| d).collect());
    }
    Ok((indices, dists))
}

fn key(i: usize, &(d, j): &(f64, usize)) -> (u8, f64, usize) {
    (u8::from(j != i), d, j)
}

const SMOOTH_K_TOLERANCE: f64 = 1e-5;
const MIN_K_DIST_SCALE: f64 = 1e-3;

/// UMAP's `smooth_knn_dist` with `local_connectivity = 1`, `bandwidth = 1`: per row (σ, ρ).
fn smooth_knn_dist(dists: &[Vec<f64>], k: usize) -> Vec<(f64, f64)> {
    let target = (k as f64).log2();
    let n_all: usize = dists.iter().map(Vec::len).sum();
    let mean_all = dists.iter().flatten().sum::<f64>() / n_all.max(1) as f64;
    dists
        .iter()
        .map(|row| {
            let rho = row.iter().copied().find(|&d| d > 0.0).unwrap_or(0.0);
            let (mut lo, mut hi, mut mid) = (0.0f64, f64::INFINITY, 1.0f64);
            for _ in 0..64 {
                let psum: f64 = row[1..]
                    .iter()
                    .map(|&d| {
                        let x = d - rho;
                        if x > 0.0 {
                            (-(x / mid)).exp()
                        } else {
                            1.0
                        }
                    })
                    .sum();
                if (psum - target).abs() < SMOOTH_K_TOLERANCE {
                    break;
                }
                if psum > target {
                    hi = mid;
                    mid = (lo + hi) / 2.0;
                } else {
                    lo = mid;
                    if hi == f64::INFINITY {
                        mid *= 2.0;
                    } else {
                        mid = (lo + hi) / 2.0;
                    }
                }
            }
            let floor = if rho > 0.0 {
                MIN_K_DIST_SCALE * row.iter().sum::<f64>() / row.len() as f64
            } else {
                MIN_K_DIST_SCALE * mean_all
            };
            (mid.max(floor), rho)
        })
        .collect()
}

/// The symmetric connectivity graph as undirected edges `(i, j, w)` with `i < j`, sorted.
pub fn umap_connectivities(indices: &[Vec<usize>], dists: &[Vec<f64>]) -> Vec<(usize, usize, f64)> {
    let k = indices.first().map_or(0, Vec::len);
    let sr = smooth_knn_dist(dists, k);
    let mut directed: std::collections::BTreeMap<(usize, usize), f64> = Default::default();
    for (i, (row, drow)) in indices.iter().zip(dists).enumerate() {
        let (sigma, rho) = sr[i];
        for (&j, &d) in row.iter().zip(drow) {
            if j == i {
                continue;
            }
            let w = if d - rho <= 0.0 || sigma == 0.0 {
                1.0
            } else {
                (-(d - rho) / sigma).exp()
            };
            if w > 0.0 {
                directed.insert((i, j), w);
            }
        }
    }
    let mut edges = vec![];
    for (&(i, j), &a) in &directed {
        let b = directed.get(&(j, i)).copied().unwrap_or(0.0);
        if i < j || b == 0.0 {
            let (x, y) = if i < j { (i, j) } else { (j, i) };
            edges.push((x, y, a + b - a * b));
        }
    }
    edges.sort_by_key(|e| (e.0, e.1));
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_self_first_then_by_cosine() {
        let rows = vec![
            vec![1.0, 0.0],
            vec![0.9, 0.1],
            vec![0.0, 1.0],
            vec![0.1, 0.9],
        ];
        let (idx, d) = knn_cosine(&rows, 2).unwrap();
        assert_eq!(idx, vec![vec![0, 1], vec![1, 0], vec![2, 3], vec![3, 2]]);
        assert_eq!(d[0][0], 0.0);
        assert!(knn_cosine(&rows, 5).is_err());
        assert!(knn_cosine(&rows, 1).is_err());
        let edges = umap_connectivities(&idx, &d);
        // Mutual nearest pairs: both directions weigh 1 (distance = ρ), union 1.
        assert_eq!(edges, vec![(0, 1, 1.0), (2, 3, 1.0)]);
    }

    #[test]
    fn sigma_solves_the_log2_k_equation() {
        let row = vec![0.0, 0.1, 0.2, 0.3, 0.5];
        let sr = smooth_knn_dist(std::slice::from_ref(&row), 5);
        let (sigma, rho) = sr[0];
        assert_eq!(rho, 0.1);
        let psum: f64 = row[1..]
            .iter()
            .map(|d| (-((d - rho).max(0.0)) / sigma).exp())
            .sum();
        assert!((psum - 5f64.log2()).abs() < 1e-4, "{psum}");
    }
}

//! Leiden community detection (Traag, Waltman & van Eck, *Sci. Rep.* 9:5233, 2019) on a weighted
//! undirected graph, maximising the Reichardt–Bornholdt quality with the configuration null model
//! (`leidenalg.RBConfigurationVertexPartition`, what `scanpy.tl.leiden` uses):
//!
//! `Q = Σ_c [ 2 m_c − γ K_c² / (2m) ]`, with `m_c` the weight of edges inside community `c`, `K_c` the
//! summed weighted degree of its nodes and `m` the total edge weight (the value, and scale, `leidenalg`
//! reports as `partition.quality()` for an undirected graph; `Q / 2m` is modularity when `γ = 1`).
//!
//! One iteration is the paper's three phases, repeated level by level:
//! 1. **fast local moving**: nodes are visited from a queue (initially in random order); each moves to
//!    the neighbouring (or an empty) community with the largest strictly positive gain, and its
//!    neighbours outside that community are queued again;
//! 2. **refinement**: inside every community, starting from singletons, each node that is still alone
//!    and well connected to its community (`w(v, S−v) ≥ γ k_v (K_S − k_v) / 2m`) joins the well
//!    connected sub-community (`w(C, S−C) ≥ γ K_C (K_S − K_C) / 2m`) with the largest non-negative gain
//!    (the paper's θ → 0 limit: greedy, as `leidenalg`'s merge routine);
//! 3. **aggregation**: the refined communities become nodes, initially placed in their parent
//!    community.
//!
//! Levels stop when local moving leaves every node alone or refinement merges nothing. Like
//! `leidenalg.find_partition(..., n_iterations=-1)`, iterations repeat from the last partition until
//! one brings no improvement. Everything random (visit orders) comes from one seeded
//! [`Rng`](crate::train::rng::Rng), and sums run in a fixed order, so a seed gives the same partition
//! on every machine. Communities are numbered by size, largest first (ties: smallest node index).

use std::collections::VecDeque;

use anyhow::{bail, Result};

use crate::train::rng::Rng;

/// A weighted undirected graph: adjacency lists without self-loops, plus each node's self-loop weight
/// (which counts once towards its degree, as the diagonal of the adjacency matrix).
#[derive(Debug, Clone)]
pub struct Graph {
    offsets: Vec<usize>,
    targets: Vec<u32>,
    weights: Vec<f64>,
    self_loops: Vec<f64>,
    degree: Vec<f64>,
    /// Sum of all degrees (2m).
    total: f64,
}

impl Graph {
    /// Builds a graph from undirected edges `(i, j, w)`; repeated edges are summed, `i == j` adds to the
    /// self-loop. Weights must be finite and non-negative.
    pub fn from_edges(n: usize, edges: &[(usize, usize, f64)]) -> Result<Self> {
        let mut self_loops = vec![0.0; n];
        let mut lists: Vec<Vec<(u32, f64)>> = vec![vec![]; n];
        for &(i, j, w) in edges {
            if i >= n || j >= n {
                bail!("edge ({i}, {j}) outside a graph of {n} nodes");
            }
            if !(w.is_finite() && w >= 0.0) {
                bail!("edge ({i}, {j}) has weight {w}; weights must be finite and non-negative");
            }
            if w == 0.0 {
                continue;
            }
            if i == j {
                // An undirected loop contributes twice to the diagonal in the 2m convention.
                self_loops[i] += 2.0 * w;
            } else {
                lists[i].push((j as u32, w));
                lists[j].push((i as u32, w));
            }
        }
        Ok(Self::from_lists(lists, self_loops))
    }

    fn from_lists(mut lists: Vec<Vec<(u32, f64)>>, self_loops: Vec<f64>) -> Self {
        let n = lists.len();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut targets = vec![];
        let mut weights = vec![];
        offsets.push(0);
        let mut degree = Vec::with_capacity(n);
        for (i, l) in lists.iter_mut().enumerate() {
            l.sort_by_key(|&(j, _)| j);
            let mut d = self_loops[i];
            let mut k = 0;
            while k < l.len() {
                let j = l[k].0;
                let mut w = 0.0;
                while k < l.len() && l[k].0 == j {
                    w += l[k].1;
                    k += 1;
                }
                targets.push(j);
                weights.push(w);
                d += w;
            }
            offsets.push(targets.len());
            degree.push(d);
        }
        let total = degree.iter().sum();
        Self {
            offsets,
            targets,
            weights,
            self_loops,
            degree,
            total,
        }
    }

    pub fn n_nodes(&self) -> usize {
        self.degree.len()
    }

    /// Weighted degree of every node.
    pub fn degrees(&self) -> &[f64] {
        &self.degree
    }

    fn neighbours(&self, v: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.offsets[v]..self.offsets[v + 1];
        self.targets[r.clone()]
            .iter()
            .zip(&self.weights[r])
            .map(|(&j, &w)| (j as usize, w))
    }

    /// The graph whose nodes are the communities of `part` (ids `0..n_comms`).
    fn aggregate(&self, part: &[usize], n_comms: usize) -> Graph {
        let mut self_loops = vec![0.0; n_comms];
        let mut lists: Vec<Vec<(u32, f64)>> = vec![vec![]; n_comms];
        for v in 0..self.n_nodes() {
            let c = part[v];
            self_loops[c] += self.self_loops[v];
            for (u, w) in self.neighbours(v) {
                let d = part[u];
                if d == c {
                    self_loops[c] += w;
                } else {
                    lists[c].push((d as u32, w));
                }
            }
        }
        Self::from_lists(lists, self_loops)
    }
}

/// Options of [`leiden`].
#[derive(Debug, Clone, Copy)]
pub struct LeidenOptions {
    /// Resolution γ (larger: more, smaller communities).
    pub resolution: f64,
    pub seed: u64,
    /// Upper bound on iterations (each runs all levels); iteration stops earlier once one brings no
    /// improvement.
    pub max_iterations: usize,
}

impl Default for LeidenOptions {
    fn default() -> Self {
        Self {
            resolution: 1.0,
            seed: 0,
            max_iterations: 100,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Partition {
    /// Community of each node, numbered by size (largest first).
    pub membership: Vec<usize>,
    pub n_communities: usize,
    /// `Σ_c [2 m_c − γ K_c² / 2m]` (leidenalg's `RBConfigurationVertexPartition.quality()`).
    pub quality: f64,
    pub iterations: usize,
}

/// Runs Leiden to convergence; see the module documentation.
pub fn leiden(graph: &Graph, opts: &LeidenOptions) -> Result<Partition> {
    if !(opts.resolution.is_finite() && opts.resolution >= 0.0) {
        bail!(
            "resolution must be a finite non-negative number, got {}",
            opts.resolution
        );
    }
    let n = graph.n_nodes();
    let mut rng = Rng::derive(opts.seed, "leiden", 0);
    let mut part: Vec<usize> = (0..n).collect();
    let mut q = quality(graph, &part, opts.resolution);
    let mut iterations = 0;
    if graph.total > 0.0 {
        while iterations < opts.max_iterations.max(1) {
            iterations += 1;
            let next = iterate(graph, &part, opts.resolution, &mut rng);
            let nq = quality(graph, &next, opts.resolution);
            let improved = nq > q + 1e-12 * q.abs().max(1.0);
            if nq >= q {
                part = next;
                q = nq;
            }
            if !improved {
                break;
            }
        }
    }
    let (membership, n_communities) = renumber_by_size(&part);
    Ok(Partition {
        quality: quality(graph, &membership, opts.resolution),
        membership,
        n_communities,
        iterations,
    })
}

/// `Σ_c [2 m_c − γ K_c² / 2m]` of a partition (leidenalg's scale).
pub fn quality(graph: &Graph, part: &[usize], resolution: f64) -> f64 {
    let n_c = part.iter().copied().max().map_or(0, |m| m + 1);
    let mut inside = vec![0.0; n_c];
    let mut tot = vec![0.0; n_c];
    for v in 0..graph.n_nodes() {
        let c = part[v];
        tot[c] += graph.degree[v];
        inside[c] += graph.self_loops[v];
        for (u, w) in graph.neighbours(v) {
            if part[u] == c {
                inside[c] += w;
            }
        }
    }
    if graph.total <= 0.0 {
        return 0.0;
    }
    // `inside` counts every internal edge twice (2 m_c); `total` is 2m.
    inside
        .iter()
        .zip(&tot)
        .map(|(i, k)| i - resolution * k * k / graph.total)
        .sum()
}

/// One Leiden iteration from `start` (a partition of `graph`'s nodes); returns the new partition.
fn iterate(graph: &Graph, start: &[usize], gamma: f64, rng: &mut Rng) -> Vec<usize> {
    let n0 = graph.n_nodes();
    let (mut part, _) = compact(start);
    let mut node_map: Vec<usize> = (0..n0).collect();
    let mut level_graph: Option<Graph> = None;
    loop {
        let g = level_graph.as_ref().unwrap_or(graph);
        move_nodes(g, &mut part, gamma, rng);
        let (p, n_comms) = compact(&part);
        part = p;
        if n_comms == g.n_nodes() {
            break;
        }
        let (refined, n_ref) = compact(&refine(g, &part, gamma, rng));
        if n_ref == g.n_nodes() {
            break;
        }
        let agg = g.aggregate(&refined, n_ref);
        let mut agg_part = vec![0; n_ref];
        for v in 0..g.n_nodes() {
            agg_part[refined[v]] = part[v];
        }
        for m in node_map.iter_mut() {
            *m = refined[*m];
        }
        part = agg_part;
        level_graph = Some(agg);
    }
    node_map.iter().map(|&a| part[a]).collect()
}

/// Ids renumbered `0..k` in order of first appearance.
fn compact(part: &[usize]) -> (Vec<usize>, usize) {
    let mut map = vec![usize::MAX; part.iter().copied().max().map_or(0, |m| m + 1)];
    let mut next = 0;
    let out = part
        .iter()
        .map(|&c| {
            if map[c] == usize::MAX {
                map[c] = next;
                next += 1;
            }
            map[c]
        })
        .collect();
    (out, next)
}

fn random_order(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    order
}

/// Scratch space for "weight from a node to each community", cleared through the touched list.
struct CommWeights {
    w: Vec<f64>,
    touched: Vec<usize>,
}

impl CommWeights {
    fn new(n: usize) -> Self {
        Self {
            w: vec![f64::NAN; n],
            touched: vec![],
        }
    }

    fn add(&mut self, c: usize, x: f64) {
        if self.w[c].is_nan() {
            self.w[c] = 0.0;
            self.touched.push(c);
        }
        self.w[c] += x;
    }

    fn get(&self, c: usize) -> f64 {
        if self.w[c].is_nan() {
            0.0
        } else {
            self.w[c]
        }
    }

    fn clear(&mut self) {
        for &c in &self.touched {
            self.w[c] = f64::NAN;
        }
        self.touched.clear();
    }
}

/// Fast local moving (queue based); `part` holds ids below `n`.
fn move_nodes(g: &Graph, part: &mut [usize], gamma: f64, rng: &mut Rng) {
    let n = g.n_nodes();
    let two_m = g.total;
    let mut tot = vec![0.0; n];
    let mut size = vec![0usize; n];
    for v in 0..n {
        tot[part[v]] += g.degree[v];
        size[part[v]] += 1;
    }
    let mut empty: Vec<usize> = (0..n).rev().filter(|&c| size[c] == 0).collect();
    let mut queue: VecDeque<usize> = random_order(n, rng).into();
    let mut queued = vec![true; n];
    let mut cw = CommWeights::new(n);
    while let Some(v) = queue.pop_front() {
        queued[v] = false;
        let old = part[v];
        let kv = g.degree[v];
        for (u, w) in g.neighbours(v) {
            cw.add(part[u], w);
        }
        tot[old] -= kv;
        size[old] -= 1;
        let gain = |c: usize, w: f64, tot: &[f64]| w - gamma * kv * tot[c] / two_m;
        let mut best = old;
        let mut best_gain = gain(old, cw.get(old), &tot);
        for &c in &cw.touched {
            if c == old {
                continue;
            }
            let gc = gain(c, cw.get(c), &tot);
            if gc > best_gain {
                best = c;
                best_gain = gc;
            }
        }
        // An empty community has gain 0.
        if best_gain < 0.0 && size[old] > 0 {
            if let Some(&e) = empty.last() {
                best = e;
            }
        }
        cw.clear();
        if size[best] == 0 {
            empty.retain(|&e| e != best);
        }
        tot[best] += kv;
        size[best] += 1;
        part[v] = best;
        if size[old] == 0 && old != best {
            empty.push(old);
        }
        if best != old {
            for (u, _) in g.neighbours(v) {
                if part[u] != best && !queued[u] {
                    queued[u] = true;
                    queue.push_back(u);
                }
            }
        }
    }
}

/// Refinement of `part`: sub-communities inside each community, merged greedily from singletons.
fn refine(g: &Graph, part: &[usize], gamma: f64, rng: &mut Rng) -> Vec<usize> {
    let n = g.n_nodes();
    let two_m = g.total;
    let n_c = part.iter().copied().max().map_or(0, |m| m + 1);
    let mut tot_s = vec![0.0; n_c];
    for v in 0..n {
        tot_s[part[v]] += g.degree[v];
    }
    let mut refined: Vec<usize> = (0..n).collect();
    let mut tot_r: Vec<f64> = g.degree.clone();
    let mut size_r = vec![1usize; n];
    // Weight from each refined community to the rest of its parent community.
    let mut ext: Vec<f64> = (0..n)
        .map(|v| {
            g.neighbours(v)
                .filter(|&(u, _)| part[u] == part[v])
                .map(|(_, w)| w)
                .sum()
        })
        .collect();
    let mut cw = CommWeights::new(n);
    for v in random_order(n, rng) {
        if size_r[refined[v]] != 1 {
            continue;
        }
        let s = part[v];
        let kv = g.degree[v];
        let w_vs = ext[refined[v]];
        if w_vs < gamma * kv * (tot_s[s] - kv) / two_m {
            continue;
        }
        for (u, w) in g.neighbours(v) {
            if part[u] == s {
                cw.add(refined[u], w);
            }
        }
        let own = refined[v];
        let mut best = own;
        let mut best_gain = 0.0;
        for &c in &cw.touched {
            if c == own {
                continue;
            }
            if ext[c] < gamma * tot_r[c] * (tot_s[s] - tot_r[c]) / two_m {
                continue;
            }
            let gc = cw.get(c) - gamma * kv * tot_r[c] / two_m;
            if gc >= best_gain && (best == own || gc > best_gain) {
                best = c;
                best_gain = gc;
            }
        }
        if best != own {
            let w_to = cw.get(best);
            ext[best] = ext[best] + w_vs - 2.0 * w_to;
            tot_r[best] += kv;
            size_r[best] += 1;
            tot_r[own] = 0.0;
            size_r[own] = 0;
            ext[own] = 0.0;
            refined[v] = best;
        }
        cw.clear();
    }
    refined
}

/// Community ids by size, largest first; ties by smallest node index.
fn renumber_by_size(part: &[usize]) -> (Vec<usize>, usize) {
    let (p, k) = compact(part);
    let mut size = vec![0usize; k];
    for &c in &p {
        size[c] += 1;
    }
    // After `compact`, id order is order of first appearance = order of smallest node index.
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| size[b].cmp(&size[a]).then(a.cmp(&b)));
    let mut rank = vec![0; k];
    for (r, &c) in order.iter().enumerate() {
        rank[c] = r;
    }
    (p.iter().map(|&c| rank[c]).collect(), k)
}

/// Adjusted Rand index of two labelings of the same items (1 = identical up to renaming).
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    assert_eq!(a.len(), b.len(), "labelings of different lengths");
    let n = a.len();
    let (a, ka) = compact(a);
    let (b, kb) = compact(b);
    let mut table = vec![0u64; ka * kb];
    let mut ra = vec![0u64; ka];
    let mut rb = vec![0u64; kb];
    for i in 0..n {
        table[a[i] * kb + b[i]] += 1;
        ra[a[i]] += 1;
        rb[b[i]] += 1;
    }
    let c2 = |x: u64| (x as f64) * (x as f64 - 1.0) / 2.0;
    let index: f64 = table.iter().map(|&x| c2(x)).sum();
    let sa: f64 = ra.iter().map(|&x| c2(x)).sum();
    let sb: f64 = rb.iter().map(|&x| c2(x)).sum();
    let expected = sa * sb / c2(n as u64).max(1.0);
    let max = (sa + sb) / 2.0;
    if (max - expected).abs() < 1e-12 {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

/// A stochastic block model graph: `blocks` groups of `size` nodes, an edge inside a group with
/// probability `p_in`, between groups with `p_out`, weight 1. Returns the edges and the planted labels.
pub fn planted_partition(
    blocks: usize,
    size: usize,
    p_in: f64,
    p_out: f64,
    seed: u64,
) -> (Vec<(usize, usize, f64)>, Vec<usize>) {
    let n = blocks * size;
    let labels: Vec<usize> = (0..n).map(|i| i / size).collect();
    let mut rng = Rng::derive(seed, "planted-partition", 0);
    let mut edges = vec![];
    for i in 0..n {
        for j in i + 1..n {
            let p = if labels[i] == labels[j] { p_in } else { p_out };
            if rng.uniform() < p {
                edges.push((i, j, 1.0));
            }
        }
    }
    (edges, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_triangles_and_a_bridge() {
        let edges = [
            (0, 1, 1.0),
            (1, 2, 1.0),
            (0, 2, 1.0),
            (3, 4, 1.0),
            (4, 5, 1.0),
            (3, 5, 1.0),
            (2, 3, 0.1),
        ];
        let g = Graph::from_edges(6, &edges).unwrap();
        let p = leiden(&g, &LeidenOptions::default()).unwrap();
        assert_eq!(p.n_communities, 2);
        assert_eq!(p.membership[0], p.membership[2]);
        assert_ne!(p.membership[0], p.membership[3]);
        // Quality by hand: m = 6.1; each side has m_c = 3, K_c = 6.1: 2 × (6 − 6.1² / 12.2).
        let want = 2.0 * (6.0 - 6.1 * 6.1 / 12.2);
        assert!((p.quality - want).abs() < 1e-12, "{} vs {want}", p.quality);
    }

    #[test]
    fn recovers_a_planted_partition_deterministically() {
        let (edges, labels) = planted_partition(5, 40, 0.3, 0.02, 7);
        let g = Graph::from_edges(200, &edges).unwrap();
        let opts = LeidenOptions {
            seed: 3,
            ..Default::default()
        };
        let p = leiden(&g, &opts).unwrap();
        let ari = adjusted_rand_index(&p.membership, &labels);
        assert!(ari >= 0.95, "ARI {ari}, {} communities", p.n_communities);
        assert_eq!(leiden(&g, &opts).unwrap().membership, p.membership);
        // Every community is connected (the Leiden guarantee), checked by a flood fill.
        for c in 0..p.n_communities {
            let members: Vec<usize> = (0..200).filter(|&v| p.membership[v] == c).collect();
            let mut seen = [false; 200];
            let mut stack = vec![members[0]];
            seen[members[0]] = true;
            while let Some(v) = stack.pop() {
                for (u, _) in g.neighbours(v) {
                    if p.membership[u] == c && !seen[u] {
                        seen[u] = true;
                        stack.push(u);
                    }
                }
            }
            assert!(members.iter().all(|&v| seen[v]), "community {c} split");
        }
    }

    #[test]
    fn resolution_controls_granularity_and_edge_cases() {
        let (edges, _) = planted_partition(4, 25, 0.4, 0.05, 1);
        let g = Graph::from_edges(100, &edges).unwrap();
        let coarse = leiden(
            &g,
            &LeidenOptions {
                resolution: 0.05,
                ..Default::default()
            },
        )
        .unwrap();
        let fine = leiden(
            &g,
            &LeidenOptions {
                resolution: 5.0,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(coarse.n_communities < fine.n_communities);
        // No edges: every node alone. NaN resolution refused; bad edges refused.
        let empty = Graph::from_edges(3, &[]).unwrap();
        assert_eq!(
            leiden(&empty, &LeidenOptions::default())
                .unwrap()
                .n_communities,
            3
        );
        assert!(leiden(
            &g,
            &LeidenOptions {
                resolution: f64::NAN,
                ..Default::default()
            }
        )
        .is_err());
        assert!(Graph::from_edges(2, &[(0, 2, 1.0)]).is_err());
        assert!(Graph::from_edges(2, &[(0, 1, -1.0)]).is_err());
    }

    #[test]
    fn ari_basics() {
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[5, 5, 2, 2]), 1.0);
        assert!(adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]) < 0.0);
    }
}

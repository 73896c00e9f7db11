//! Turning an aligned expression row into model tokens exactly as the reference does: normalisation per
//! `--input-type`/`--pre-normalized`, the T (target resolution) and S (source depth) tokens, and the
//! gather of strictly positive values that feeds the encoder.

use std::fmt;
use std::str::FromStr;

use anyhow::{anyhow, bail, Result};

use super::genes::N_GENES;

/// Position ids of the two depth tokens (right after the 19,264 genes).
pub const T_POSITION: u32 = N_GENES as u32;
pub const S_POSITION: u32 = N_GENES as u32 + 1;
/// Length of the full input vector: genes + T + S.
pub const FULL_LEN: usize = N_GENES + 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    SingleCell,
    Bulk,
}

/// Whether values are raw counts (F), already normalised (T), or normalised with the total count
/// appended as the last column (A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreNormalized {
    F,
    T,
    A,
}

/// `tX`: T = X; `fX`: T = log10(total·X); `aX`: T = log10(total) + X.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetResolution {
    Fixed(f64),
    Fold(f64),
    Add(f64),
}

impl FromStr for TargetResolution {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            anyhow!("invalid --tgthighres '{s}': expected t<number>, f<number> or a<number> (e.g. t4, f1, a5)")
        };
        let mut chars = s.chars();
        let kind = chars.next().ok_or_else(bad)?;
        let x: f64 = chars.as_str().parse().map_err(|_| bad())?;
        if !x.is_finite() {
            return Err(bad());
        }
        match kind {
            't' => Ok(Self::Fixed(x)),
            'f' => {
                if x <= 0.0 {
                    bail!("invalid --tgthighres '{s}': the fold must be positive");
                }
                Ok(Self::Fold(x))
            }
            'a' => Ok(Self::Add(x)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for TargetResolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(x) => write!(f, "t{x}"),
            Self::Fold(x) => write!(f, "f{x}"),
            Self::Add(x) => write!(f, "a{x}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PreprocessOptions {
    pub input_type: InputType,
    pub pre_normalized: PreNormalized,
    pub tgthighres: TargetResolution,
}

/// One cell over model genes: sorted unique gene indices with their values (duplicates already summed).
#[derive(Debug, Clone, Default)]
pub struct AlignedCell {
    pub genes: Vec<u32>,
    pub values: Vec<f64>,
    /// Total count supplied by the input (`--pre-normalized A`: the last column).
    pub given_total: Option<f64>,
}

impl AlignedCell {
    pub fn sum(&self) -> f64 {
        self.values.iter().sum()
    }
}

/// A cell's model input: every nonzero entry of the full 19,266-vector in position order
/// (T and S last), as f32, the precision the network consumes.
#[derive(Debug, Clone, PartialEq)]
pub struct CellTokens {
    pub positions: Vec<u32>,
    pub values: Vec<f32>,
}

impl CellTokens {
    /// Encoder input: strictly positive entries only, in position order.
    pub fn gathered(&self) -> (Vec<f32>, Vec<u32>) {
        self.positions
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| **v > 0.0)
            .map(|(p, v)| (*v, *p))
            .unzip()
    }

    /// Number of encoder tokens (strictly positive entries).
    pub fn n_gathered(&self) -> usize {
        self.values.iter().filter(|v| **v > 0.0).count()
    }

    /// The full input vector.
    pub fn dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; FULL_LEN];
        for (p, v) in self.positions.iter().zip(&self.values) {
            out[*p as usize] = *v;
        }
        out
    }
}

/// File-level statistics some modes need before any cell is processed.
#[derive(Debug, Clone, Copy, Default)]
pub struct DatasetStats {
    /// Median of the positive per-cell totals (bulk with raw counts normalises every sample to it).
    pub median_total: Option<f64>,
}

impl DatasetStats {
    pub fn needs_pass(opts: &PreprocessOptions) -> bool {
        opts.input_type == InputType::Bulk && opts.pre_normalized == PreNormalized::F
    }

    pub fn from_totals(mut totals: Vec<f64>) -> Self {
        totals.retain(|t| *t > 0.0);
        if totals.is_empty() {
            return Self::default();
        }
        totals.sort_by(f64::total_cmp);
        let n = totals.len();
        let median = if n % 2 == 1 {
            totals[n / 2]
        } else {
            (totals[n / 2 - 1] + totals[n / 2]) / 2.0
        };
        Self {
            median_total: Some(median),
        }
    }
}

/// Checks values are finite and non-negative; `what` names the cell for the message.
pub fn validate(cell: &AlignedCell, what: &str) -> Result<()> {
    for &v in &cell.values {
        if !v.is_finite() {
            bail!("{what} contains a non-finite value ({v})");
        }
        if v < 0.0 {
            bail!("{what} contains a negative value ({v}); expected counts or non-negative normalised expression, not scaled data");
        }
    }
    if let Some(t) = cell.given_total {
        if !t.is_finite() || t <= 0.0 {
            bail!("{what} has total count {t} in its last column (--pre-normalized A needs a positive total)");
        }
    }
    Ok(())
}

pub fn preprocess(
    cell: &AlignedCell,
    opts: &PreprocessOptions,
    stats: &DatasetStats,
    what: &str,
) -> Result<CellTokens> {
    validate(cell, what)?;
    if cell.values.iter().all(|&v| v == 0.0) {
        bail!("{what} is empty: no expression in any of the 19,264 model genes");
    }
    let raw_total = cell.sum();
    let (values, t, s): (Vec<f64>, f64, f64) = match opts.input_type {
        InputType::SingleCell => {
            let (values, total) = match opts.pre_normalized {
                PreNormalized::F => (
                    cell.values
                        .iter()
                        .map(|x| (x / raw_total * 1e4).ln_1p())
                        .collect(),
                    raw_total,
                ),
                PreNormalized::T => (cell.values.clone(), raw_total),
                PreNormalized::A => (
                    cell.values.clone(),
                    cell.given_total.ok_or_else(|| {
                        anyhow!("{what}: --pre-normalized A needs a total column")
                    })?,
                ),
            };
            let s = total.log10();
            let t = match opts.tgthighres {
                TargetResolution::Fixed(x) => x,
                TargetResolution::Fold(x) => (total * x).log10(),
                TargetResolution::Add(x) => total.log10() + x,
            };
            (values, t, s)
        }
        InputType::Bulk => match opts.pre_normalized {
            PreNormalized::F => {
                let median = stats
                    .median_total
                    .ok_or_else(|| anyhow!("bulk normalisation needs the file's median total"))?;
                let scale = raw_total / median;
                let v: Vec<f64> = cell.values.iter().map(|x| (x / scale).ln_1p()).collect();
                let depth = v.iter().sum::<f64>().log10();
                (v, depth, depth)
            }
            PreNormalized::T => (cell.values.clone(), raw_total, raw_total),
            PreNormalized::A => {
                bail!("--pre-normalized A is only defined for --input-type singlecell")
            }
        },
    };
    let mut positions = Vec::with_capacity(values.len() + 2);
    let mut out = Vec::with_capacity(values.len() + 2);
    for (g, v) in cell.genes.iter().zip(&values) {
        if *v != 0.0 {
            positions.push(*g);
            out.push(*v as f32);
        }
    }
    for (p, v) in [(T_POSITION, t), (S_POSITION, s)] {
        if !v.is_finite() {
            bail!("{what}: depth token is not finite ({v}); check the total count");
        }
        if v != 0.0 {
            positions.push(p);
            out.push(v as f32);
        }
    }
    Ok(CellTokens {
        positions,
        values: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_target_resolution() {
        assert_eq!(
            "t4".parse::<TargetResolution>().unwrap(),
            TargetResolution::Fixed(4.0)
        );
        assert_eq!(
            "f1".parse::<TargetResolution>().unwrap(),
            TargetResolution::Fold(1.0)
        );
        assert_eq!(
            "a4.5".parse::<TargetResolution>().unwrap(),
            TargetResolution::Add(4.5)
        );
        assert!("x4".parse::<TargetResolution>().is_err());
        assert!("t".parse::<TargetResolution>().is_err());
        assert!("f0".parse::<TargetResolution>().is_err());
    }

    #[test]
    fn median_ignores_empty_cells() {
        let s = DatasetStats::from_totals(vec![0.0, 3.0, 1.0, 10.0, 4.0]);
        assert_eq!(s.median_total, Some(3.5));
    }

    #[test]
    fn gather_keeps_positive_entries_with_depth_tokens_last() {
        let cell = AlignedCell {
            genes: vec![3, 7, 9],
            values: vec![1.0, 0.0, 3.0],
            given_total: None,
        };
        let opts = PreprocessOptions {
            input_type: InputType::SingleCell,
            pre_normalized: PreNormalized::F,
            tgthighres: TargetResolution::Fixed(4.0),
        };
        let t = preprocess(&cell, &opts, &DatasetStats::default(), "cell").unwrap();
        let (v, p) = t.gathered();
        assert_eq!(p, vec![3, 9, T_POSITION, S_POSITION]);
        assert!((v[0] as f64 - (1.0f64 / 4.0 * 1e4).ln_1p()).abs() < 1e-5);
        assert_eq!(v[2], 4.0);
        assert!((v[3] as f64 - 4f64.log10()).abs() < 1e-7);
    }

    #[test]
    fn refuses_bad_values() {
        let opts = PreprocessOptions {
            input_type: InputType::SingleCell,
            pre_normalized: PreNormalized::F,
            tgthighres: TargetResolution::Fixed(4.0),
        };
        let st = DatasetStats::default();
        let mk = |v: Vec<f64>| AlignedCell {
            genes: (0..v.len() as u32).collect(),
            values: v,
            given_total: None,
        };
        assert!(preprocess(&mk(vec![1.0, f64::NAN]), &opts, &st, "c")
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
        assert!(preprocess(&mk(vec![1.0, -2.0]), &opts, &st, "c")
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(preprocess(&mk(vec![0.0, 0.0]), &opts, &st, "c")
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn bulk_modes_set_t_and_s_from_the_sample_total() {
        let cell = AlignedCell {
            genes: vec![0, 1],
            values: vec![2.0, 6.0],
            given_total: None,
        };
        let mut opts = PreprocessOptions {
            input_type: InputType::Bulk,
            pre_normalized: PreNormalized::T,
            tgthighres: TargetResolution::Fold(1.0),
        };
        let t = preprocess(&cell, &opts, &DatasetStats::default(), "s").unwrap();
        assert_eq!(t.values, vec![2.0, 6.0, 8.0, 8.0]);
        opts.pre_normalized = PreNormalized::F;
        let st = DatasetStats {
            median_total: Some(4.0),
        };
        let t = preprocess(&cell, &opts, &st, "s").unwrap();
        let v = [(1.0f64).ln_1p(), (3.0f64).ln_1p()];
        let depth = (v[0] + v[1]).log10();
        assert_eq!(
            t.values,
            vec![v[0] as f32, v[1] as f32, depth as f32, depth as f32]
        );
        opts.pre_normalized = PreNormalized::A;
        assert!(preprocess(&cell, &opts, &st, "s").is_err());
    }

    #[test]
    fn nonpositive_depth_tokens_stay_in_the_full_vector_but_not_in_the_gather() {
        let cell = AlignedCell {
            genes: vec![5],
            values: vec![1.0],
            given_total: None,
        };
        let opts = PreprocessOptions {
            input_type: InputType::SingleCell,
            pre_normalized: PreNormalized::T,
            tgthighres: TargetResolution::Fixed(-1.0),
        };
        let t = preprocess(&cell, &opts, &DatasetStats::default(), "c").unwrap();
        // S = log10(1) = 0 vanishes; T = -1 is kept in the full vector only.
        assert_eq!(t.positions, vec![5, T_POSITION]);
        assert_eq!(t.gathered().1, vec![5]);
        assert_eq!(t.dense()[T_POSITION as usize], -1.0);
    }
}

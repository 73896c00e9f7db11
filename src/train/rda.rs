//! The read-depth-aware (RDA) masked regression objective of scFoundation pretraining
//! (Hao et al. 2024, Methods "RDA pretraining task"):
//!
//! 1. the input is the raw cell, unchanged with probability `no_downsample_prob`, otherwise binomially
//!    downsampled at a rate drawn from Beta(a, b) (the paper's exact "hierarchical Bayesian
//!    downsampling" is in a supplement that was not available; these defaults are ours);
//! 2. T = log10(raw total), S = log10(input total); input and target are normalised as
//!    log1p(x / total * 1e4), the target from the *raw* cell;
//! 3. nonzero input values are masked with `value_mask_prob`, zeros with `zero_mask_prob`;
//! 4. masked and zero positions never enter the encoder: they reach the decoder as the mask embedding
//!    (the literal `mask_token_id` value) or the embedding of the value 0, exactly as at inference;
//! 5. the loss is the mean squared error over masked positions against the normalised raw target.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

use super::rng::Rng;
use crate::data::preprocess::{FULL_LEN, S_POSITION, T_POSITION};
use crate::data::{AlignedCell, N_GENES};
use crate::model::heads::CellInput;
use crate::model::MaeAutobin;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RdaOptions {
    /// Probability that the input is the raw cell itself (T = S).
    pub no_downsample_prob: f64,
    /// Beta(a, b) law of the downsampling rate.
    pub downsample_beta: (f64, f64),
    /// Masking probability of nonzero input values.
    pub value_mask_prob: f64,
    /// Masking probability of zero input values.
    pub zero_mask_prob: f64,
}

impl Default for RdaOptions {
    fn default() -> Self {
        Self {
            no_downsample_prob: 0.5,
            downsample_beta: (2.0, 2.0),
            value_mask_prob: 0.3,
            zero_mask_prob: 0.03,
        }
    }
}

impl RdaOptions {
    pub fn validate(&self) -> Result<()> {
        for (name, p) in [
            ("--no-downsample-prob", self.no_downsample_prob),
            ("--value-mask-prob", self.value_mask_prob),
            ("--zero-mask-prob", self.zero_mask_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                bail!("{name} must be between 0 and 1, got {p}");
            }
        }
        let (a, b) = self.downsample_beta;
        if !(a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite()) {
            bail!("--downsample-beta needs two positive numbers, got {a},{b}");
        }
        Ok(())
    }
}

/// One cell's training example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Encoder tokens: unmasked positive input values (normalised) and T, S, in position order.
    pub values: Vec<f32>,
    pub positions: Vec<u32>,
    /// Decoder input over all positions: normalised input, `mask_token_id` where masked, T and S last.
    pub full: Vec<f32>,
    /// Masked gene positions (ascending) and the normalised raw value at each: the regression target.
    pub masked: Vec<u32>,
    pub target: Vec<f32>,
    /// Downsampling rate, `None` when the input is the raw cell.
    pub rate: Option<f64>,
    /// Masked positions whose input value was nonzero.
    pub n_masked_nonzero: usize,
    /// Nonzero input values (before masking).
    pub n_nonzero: usize,
}

/// Thins counts at `rate`: each whole count survives with probability `rate` (an exact binomial
/// draw); a fractional remainder (non-count input) survives whole with the same probability.
pub fn downsample(values: &[f64], rate: f64, rng: &mut Rng) -> Vec<f64> {
    values
        .iter()
        .map(|&x| {
            let n = x.floor();
            let frac = x - n;
            let mut y = rng.binomial(n as u64, rate) as f64;
            if frac > 0.0 && rng.bernoulli(rate) {
                y += frac;
            }
            y
        })
        .collect()
}

fn normalise(x: f64, total: f64) -> f32 {
    (x / total * 1e4).ln_1p() as f32
}

/// Builds the example for `cell` (raw counts over model genes). Draws, in order: keep-or-downsample,
/// the rate and the thinning, then one masking draw per gene.
pub fn make_example(
    cell: &AlignedCell,
    opts: &RdaOptions,
    mask_token: f32,
    rng: &mut Rng,
) -> Result<Example> {
    let raw_total = cell.sum();
    if raw_total <= 1.0 || !raw_total.is_finite() {
        bail!("cell total {raw_total} is too small for the depth tokens");
    }
    let mut rate = None;
    let mut input = cell.values.clone();
    if !rng.bernoulli(opts.no_downsample_prob) {
        let r = rng.beta(opts.downsample_beta.0, opts.downsample_beta.1);
        let thinned = downsample(&cell.values, r, rng);
        // A cell thinned to nothing has no S token; it stays raw instead.
        if thinned.iter().sum::<f64>() > 0.0 {
            input = thinned;
            rate = Some(r);
        }
    }
    let in_total: f64 = input.iter().sum();
    let mut full = vec![0f32; FULL_LEN];
    let mut target = vec![0f32; N_GENES];
    for ((&g, &x), &y) in cell.genes.iter().zip(&cell.values).zip(&input) {
        target[g as usize] = normalise(x, raw_total);
        if y > 0.0 {
            full[g as usize] = normalise(y, in_total);
        }
    }
    let mut ex = Example {
        values: vec![],
        positions: vec![],
        full: vec![],
        masked: vec![],
        target: vec![],
        rate,
        n_masked_nonzero: 0,
        n_nonzero: 0,
    };
    for g in 0..N_GENES {
        let v = full[g];
        let nonzero = v > 0.0;
        ex.n_nonzero += nonzero as usize;
        let p = if nonzero {
            opts.value_mask_prob
        } else {
            opts.zero_mask_prob
        };
        if rng.bernoulli(p) {
            full[g] = mask_token;
            ex.masked.push(g as u32);
            ex.target.push(target[g]);
            ex.n_masked_nonzero += nonzero as usize;
        } else if nonzero {
            ex.values.push(v);
            ex.positions.push(g as u32);
        }
    }
    for (pos, depth) in [
        (T_POSITION, raw_total.log10()),
        (S_POSITION, in_total.log10()),
    ] {
        full[pos as usize] = depth as f32;
        // As at inference, only strictly positive values enter the encoder.
        if depth > 0.0 {
            ex.values.push(depth as f32);
            ex.positions.push(pos);
        }
    }
    ex.full = full;
    Ok(ex)
}

/// Sum of squared errors over the masked positions of a batch (a scalar tensor in the autograd graph)
/// and the number of masked positions. `None` when nothing in the batch is masked.
pub fn masked_sse(
    model: &MaeAutobin,
    batch: &[Example],
    device: &Device,
) -> Result<Option<(Tensor, usize)>> {
    let seq_len = model.config().seq_len;
    let mut idx = vec![];
    let mut target = vec![];
    for (i, ex) in batch.iter().enumerate() {
        idx.extend(ex.masked.iter().map(|&g| (i * seq_len) as u32 + g));
        target.extend_from_slice(&ex.target);
    }
    if idx.is_empty() {
        return Ok(None);
    }
    let cells: Vec<CellInput> = batch
        .iter()
        .map(|ex| CellInput {
            values: &ex.values,
            positions: &ex.positions,
            full: &ex.full,
        })
        .collect();
    let pred = model.predict_expression(&cells, device)?.flatten_all()?;
    // Under mixed precision the loss is summed in f32.
    let pred = match pred.dtype() {
        DType::BF16 | DType::F16 => pred.to_dtype(DType::F32)?,
        _ => pred,
    };
    let n = idx.len();
    let idx = Tensor::from_vec(idx, n, device)?;
    let target = Tensor::from_vec(target, n, device)?.to_dtype(pred.dtype())?;
    let diff = (pred.index_select(&idx, 0)? - target)?;
    Ok(Some((diff.sqr()?.sum_all()?, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(n_genes: u32, count: f64) -> AlignedCell {
        AlignedCell {
            genes: (0..n_genes).map(|g| g * 7).collect(),
            values: vec![count; n_genes as usize],
            given_total: None,
        }
    }

    #[test]
    fn unchanged_input_follows_the_inference_preprocessing() {
        let opts = RdaOptions {
            no_downsample_prob: 1.0,
            value_mask_prob: 0.0,
            zero_mask_prob: 0.0,
            ..Default::default()
        };
        let c = cell(300, 2.0);
        let ex = make_example(&c, &opts, 102.0, &mut Rng::seed_from_u64(1)).unwrap();
        let prep = crate::data::preprocess::preprocess(
            &c,
            &crate::data::PreprocessOptions {
                input_type: crate::data::InputType::SingleCell,
                pre_normalized: crate::data::PreNormalized::F,
                tgthighres: crate::data::TargetResolution::Fold(1.0),
            },
            &Default::default(),
            "c",
        )
        .unwrap();
        let (v, p) = prep.gathered();
        assert_eq!(ex.values, v);
        assert_eq!(ex.positions, p);
        assert_eq!(ex.full, prep.dense());
        assert!(ex.masked.is_empty() && ex.rate.is_none());
    }

    #[test]
    fn masked_positions_leave_the_encoder_and_carry_the_mask_value() {
        let opts = RdaOptions {
            no_downsample_prob: 0.0,
            ..Default::default()
        };
        let c = cell(500, 5.0);
        let ex = make_example(&c, &opts, 102.0, &mut Rng::seed_from_u64(2)).unwrap();
        let rate = ex.rate.expect("downsampled");
        assert!(rate > 0.0 && rate < 1.0);
        for (&g, &t) in ex.masked.iter().zip(&ex.target) {
            assert_eq!(ex.full[g as usize], 102.0);
            assert!(!ex.positions.contains(&g));
            // The target is the raw cell: 5 counts of a 2500 total.
            let want = if g % 7 == 0 && g / 7 < 500 {
                (5.0f64 / 2500.0 * 1e4).ln_1p() as f32
            } else {
                0.0
            };
            assert_eq!(t, want);
        }
        // T is the raw depth, S the (smaller) input depth.
        let n = ex.values.len();
        assert_eq!(ex.positions[n - 2..], [T_POSITION, S_POSITION]);
        assert_eq!(ex.values[n - 2], 2500f64.log10() as f32);
        assert!(ex.values[n - 1] < ex.values[n - 2]);
        for (&p, &v) in ex.positions.iter().zip(&ex.values) {
            assert!(v > 0.0 && v != 102.0);
            assert_eq!(ex.full[p as usize], v);
        }
    }

    #[test]
    fn downsampling_keeps_each_count_with_the_rate() {
        let mut rng = Rng::seed_from_u64(4);
        let x = vec![10.0, 3.5, 0.0, 1000.0];
        let k = 20000;
        let mut sums = [0f64; 4];
        for _ in 0..k {
            for (s, y) in sums.iter_mut().zip(downsample(&x, 0.25, &mut rng)) {
                *s += y;
            }
        }
        for (s, x) in sums.iter().zip(&x) {
            assert!(
                (s / k as f64 - 0.25 * x).abs() <= 0.02 * x.max(1.0),
                "{s} {x}"
            );
        }
        // Whole counts stay whole.
        assert!(downsample(&[7.0, 12.0], 0.5, &mut rng)
            .iter()
            .all(|y| y.fract() == 0.0));
    }
}

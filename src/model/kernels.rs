//! CPU kernels fused for inference: the arithmetic of the composite candle ops they replace, in one
//! pass over memory instead of several, with a vectorised `exp` (within 2 ulp of libm's; the
//! exponentials of the attention softmax and the FAVOR+ features were a tenth of the decoder's time
//! as scalar libm calls). Training (tensors that track gradients) and other devices keep the
//! composite ops.

use candle_core::cpu::kernels::VecOps;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

/// Whether the fused CPU kernels apply to `t`: f32 on the CPU, outside autograd, and not switched off
/// with `SCFOUNDATION_FUSED=0` (candle's composite ops throughout, e.g. to measure the difference).
pub fn fusable(t: &Tensor) -> bool {
    enabled()
        && matches!(t.device(), Device::Cpu)
        && t.dtype() == candle_core::DType::F32
        && !t.track_op()
}

/// `SCFOUNDATION_FUSED` is not `0`.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SCFOUNDATION_FUSED").map_or(true, |v| v.trim() != "0"))
}

/// FAVOR+ positive features from the projections `dash` [.., rows, m], each row's `diag` [.., rows, 1]
/// and the stabiliser `stab` (one value per row, or per group of consecutive rows; `None`: each row's
/// own maximum, found in the same pass): `(exp((dash - diag) - stab) + eps) * ratio`.
pub fn favor_features(
    dash: &Tensor,
    diag: &Tensor,
    stab: Option<&Tensor>,
    eps: f64,
    ratio: f64,
) -> Result<Tensor> {
    let op = FavorFeatures {
        eps: eps as f32,
        ratio: ratio as f32,
    };
    match stab {
        Some(stab) => dash.apply_op3_no_bwd(diag, &stab.contiguous()?, &op),
        None => dash.apply_op2_no_bwd(diag, &op),
    }
}

struct FavorFeatures {
    eps: f32,
    ratio: f32,
}

/// The values of a contiguous f32 CPU tensor, for the custom ops here and in `matmul`; `what` names
/// the operand in the error.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what} must be contiguous f32"),
    }
}

impl FavorFeatures {
    fn run(
        &self,
        l1: &Layout,
        dash: &[f32],
        diag: &[f32],
        stab: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        let m = *l1.dims().last().unwrap_or(&1);
        let rows = dash.len().checked_div(m).unwrap_or(0);
        let groups = stab.map_or(rows, <[f32]>::len);
        if diag.len() != rows || (rows > 0 && (groups == 0 || !rows.is_multiple_of(groups))) {
            candle_core::bail!(
                "favor-features: {rows} rows, {} diag values, {groups} stabilisers",
                diag.len()
            );
        }
        let per_stab = rows.checked_div(groups).unwrap_or(1);
        let mut out: Vec<f32> = Vec::with_capacity(dash.len());
        if m > 0 {
            out.spare_capacity_mut()[..dash.len()]
                .par_chunks_mut(m)
                .zip(dash.par_chunks(m))
                .enumerate()
                .for_each(|(r, (o, d))| {
                    let s = match stab {
                        Some(st) => st[r / per_stab],
                        None => d.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    };
                    let g = diag[r];
                    let o = init_row(o, d.iter().map(|&x| (x - g) - s));
                    exp_in_place(o);
                    for v in o.iter_mut() {
                        *v = (*v + self.eps) * self.ratio;
                    }
                });
        }
        // SAFETY: every row of the first dash.len() values was written by init_row.
        unsafe { out.set_len(dash.len()) };
        Ok(out)
    }
}

impl CustomOp2 for FavorFeatures {
    fn name(&self) -> &'static str {
        "favor-features"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = self.run(
            l1,
            contiguous_f32(s1, l1, "favor-features: dash")?,
            contiguous_f32(s2, l2, "favor-features: diag")?,
            None,
        )?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

impl CustomOp3 for FavorFeatures {
    fn name(&self) -> &'static str {
        "favor-features"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let stab = contiguous_f32(s3, l3, "favor-features: stab")?;
        let out = self.run(
            l1,
            contiguous_f32(s1, l1, "favor-features: dash")?,
            contiguous_f32(s2, l2, "favor-features: diag")?,
            Some(stab),
        )?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Writes `values` into an uninitialised row and returns it initialised.
fn init_row(
    row: &mut [std::mem::MaybeUninit<f32>],
    values: impl Iterator<Item = f32>,
) -> &mut [f32] {
    let n = row.len();
    let mut written = 0;
    for (o, v) in row.iter_mut().zip(values) {
        o.write(v);
        written += 1;
    }
    assert_eq!(written, n, "row source shorter than the row");
    // SAFETY: all n elements were written just above.
    unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr() as *mut f32, n) }
}

/// Softmax over the last dimension of a contiguous f32 tensor: candle's `softmax_last_dim` (row max,
/// exponentials, their sum, division) with the vectorised `exp`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Softmax)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim-fast-exp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(s, l, "softmax: the input")?;
        let n = *l.dims().last().unwrap_or(&1);
        let mut out: Vec<f32> = Vec::with_capacity(src.len());
        if n > 0 {
            out.spare_capacity_mut()[..src.len()]
                .par_chunks_mut(n)
                .zip(src.par_chunks(n))
                .for_each(|(o, x)| softmax_in_place(init_row(o, x.iter().copied())));
        }
        // SAFETY: every row was written by init_row.
        unsafe { out.set_len(src.len()) };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// Softmax of one row in place (as candle's `softmax_last_dim`: max, exponentials, sum, division).
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let n = row.len();
    let mut max = f32::NEG_INFINITY;
    // SAFETY: row holds n values.
    unsafe { f32::vec_reduce_max(row.as_ptr(), &mut max, n) };
    row.iter_mut().for_each(|v| *v -= max);
    exp_in_place(row);
    let mut sum = 0f32;
    // SAFETY: row holds n values.
    unsafe { f32::vec_reduce_sum(row.as_ptr(), &mut sum, n) };
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// `exp` of every value, vectorised: AVX-512 or AVX2 when the CPU has them (chosen at run time),
/// else the same formula one value at a time (fused multiply-adds throughout, so every path gives
/// the same bits).
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { exp_avx512(xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { exp_avx2(xs) };
        }
    }
    xs.iter_mut().for_each(|v| *v = exp_f32(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn exp_avx512(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = exp_f32(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2(xs: &mut [f32]) {
    xs.iter_mut().for_each(|v| *v = exp_f32(*v));
}

/// e^x: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by Cephes' degree-6 polynomial (about 1 ulp),
/// times 2^n built in the exponent bits. Below ln(f32::MIN_POSITIVE) the result is 0 (so masked
/// scores, -inf, give exactly 0), above ln(f32::MAX) it is +inf; NaN stays NaN.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LO: f32 = -87.336_55; // ln(f32::MIN_POSITIVE)
    const HI: f32 = 88.376_26; // a little under ln(f32::MAX): 2^n stays finite
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let c = x.clamp(LO, HI);
    let n = (c * std::f32::consts::LOG2_E + 0.5).floor();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, c));
    let mut p = 1.987_569_2e-4_f32;
    p = p.mul_add(r, 1.398_2e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let y = (p * r).mul_add(r, r) + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    let e = y * scale;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;

    #[test]
    fn favor_features_equal_the_composite_ops() {
        let dev = Device::Cpu;
        let dash = Tensor::randn(0f32, 1.0, (2, 3, 5, 7), &dev).unwrap();
        let diag = Tensor::randn(0f32, 1.0, (2, 3, 5, 1), &dev).unwrap();
        let row_max = dash.max_keepdim(D::Minus1).unwrap();
        let cell_max = dash
            .flatten_from(1)
            .unwrap()
            .max_keepdim(1)
            .unwrap()
            .reshape((2, 1, 1, 1))
            .unwrap();
        for (stab, given) in [(&row_max, true), (&row_max, false), (&cell_max, true)] {
            let want = ((dash
                .broadcast_sub(&diag)
                .unwrap()
                .broadcast_sub(stab)
                .unwrap()
                .exp()
                .unwrap()
                + 1e-4)
                .unwrap()
                * 0.3)
                .unwrap();
            let got = favor_features(&dash, &diag, given.then_some(stab), 1e-4, 0.3).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                v.iter().map(|x| x.to_bits()).collect()
            };
            let (w, g) = (bits(&want), bits(&got));
            for (a, b) in w.iter().zip(&g) {
                let (a, b) = (f32::from_bits(*a), f32::from_bits(*b));
                assert!(
                    (a - b).abs() <= 4.0 * f32::EPSILON * a.abs(),
                    "{a} vs {b} (given: {given})"
                );
            }
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_and_exact_at_the_edges() {
        let mut worst = 0u32;
        let mut xs: Vec<f32> = (0..2_000_001)
            .map(|i| -87.0 + i as f32 * (175.0 / 2e6))
            .collect();
        xs.extend([0.0, -0.0, 1.0, -1.0, 1e-8, -1e-8, 88.0, -87.3]);
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            let want = x.exp();
            let ulp = (want.to_bits() as i64 - y.to_bits() as i64).unsigned_abs() as u32;
            worst = std::cmp::Ord::max(worst, ulp);
        }
        assert!(worst <= 2, "worst {worst} ulp");
        let mut edge = [
            f32::NEG_INFINITY,
            -1000.0,
            -87.4,
            89.0,
            f32::INFINITY,
            f32::NAN,
            0.0,
        ];
        exp_in_place(&mut edge);
        assert_eq!(&edge[..3], &[0.0, 0.0, 0.0]);
        assert_eq!(&edge[3..5], &[f32::INFINITY, f32::INFINITY]);
        assert!(edge[5].is_nan());
        assert_eq!(edge[6], 1.0);
        // Every dispatch path gives the same bits (fused multiply-adds in all of them).
        let mut scalar = xs.clone();
        scalar.iter_mut().for_each(|v| *v = exp_f32(*v));
        assert_eq!(
            scalar.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            ys.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn softmax_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 3, 4, 37), &dev).unwrap();
        let mut m = vec![0f32; 37];
        m[30..].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
        let x = x
            .broadcast_add(&Tensor::from_vec(m, 37, &dev).unwrap())
            .unwrap();
        let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
        let got = softmax_last_dim(&x).unwrap();
        let d = (want - &got)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        let masked = got
            .narrow(3, 30, 7)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(masked.to_scalar::<f32>().unwrap(), 0.0);
    }
}

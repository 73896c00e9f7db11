//! Matrix products of the model. On the CPU in f32 they go to OpenBLAS's `sgemm` when built with the
//! `openblas` feature (its AVX-512 kernels run about 1.8x candle's AVX2 GEMM on the machines we
//! measured; `scfoundation bench` prints both ceilings); everything else (GPU, bf16, candle chosen
//! with `SCFOUNDATION_GEMM=candle`) uses candle's `matmul`. The OpenBLAS product is an autograd op
//! (its backward pass is two more products), so training takes the same path.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::Linear;

use crate::cpu::{gemm, Gemm};

pub(crate) fn use_blas(a: &Tensor, b: &Tensor) -> bool {
    cfg!(feature = "openblas")
        && matches!(a.device(), Device::Cpu)
        && a.dtype() == candle_core::DType::F32
        && b.dtype() == candle_core::DType::F32
        && gemm() == Gemm::Blas
}

/// `a @ b` for `[.., m, k] x [.., k, n]` with equal batch dims (as `Tensor::matmul`).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "openblas")]
    if use_blas(a, b) && a.rank() >= 2 && a.rank() == b.rank() {
        return blas::matmul(a, b);
    }
    a.matmul(b)
}

/// `a @ b` for `[.., m, k] x [k, n]`: the batch folded into the rows when `a` allows it.
pub fn broadcast_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if use_blas(a, b) && b.rank() == 2 && a.rank() >= 2 && a.is_contiguous() {
        let dims = a.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows = a.elem_count() / k.max(1);
        let mut out = dims[..dims.len() - 1].to_vec();
        out.push(b.dim(1)?);
        return matmul(&a.reshape((rows, k))?, b)?.reshape(out);
    }
    a.broadcast_matmul(b)
}

/// An activation applied to a linear layer's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu,
    /// Exact-erf GELU (candle's `gelu_erf`).
    GeluErf,
}

impl Act {
    fn apply(self, t: &Tensor) -> Result<Tensor> {
        match self {
            Act::Relu => t.relu(),
            Act::GeluErf => t.gelu_erf(),
        }
    }
}

/// `act(x @ w^T + bias)`. At inference on the CPU the activation is applied inside the product's
/// output pass (the same arithmetic as candle's op, so the same bits) instead of a pass of its own.
pub fn linear_act(l: &Linear, x: &Tensor, act: Act) -> Result<Tensor> {
    // Mixed precision falls through to `linear` (autocast) and the activation on its f32 result.
    #[cfg(feature = "openblas")]
    if use_blas(x, l.weight()) && x.is_contiguous() && !x.track_op() && !l.weight().track_op() {
        if let Some(b) = l.bias() {
            let (rows, k, out) = rows_k_out(x, l)?;
            return blas::affine_act(&x.reshape((rows, k))?, &l.weight().t()?, b, Some(act))?
                .reshape(out);
        }
    }
    act.apply(&linear(l, x)?)
}

/// The feed-forward pair `l2(act(l1(x)))`. Under mixed precision the hidden activation, read only by
/// `l2`'s product, stays in the weights' dtype: the first product already rounded it there and `l2`
/// would round it there again, so this drops two casts of the widest activation and half its
/// memory. ReLU is exact either way; candle's CPU GELU on bf16 computes in f64 and rounds once, its
/// CUDA kernel rounds the normal CDF to bf16 before the product (one more bf16 rounding).
pub fn feed_forward(l1: &Linear, l2: &Linear, x: &Tensor, act: Act) -> Result<Tensor> {
    match autocast(l1, x) {
        Some(half) => {
            let h = act.apply(&linear(l1, &x.to_dtype(half)?)?)?;
            linear(l2, &h)?.to_dtype(x.dtype())
        }
        None => linear(l2, &linear_act(l1, x, act)?),
    }
}

#[cfg(feature = "openblas")]
fn rows_k_out(x: &Tensor, l: &Linear) -> Result<(usize, usize, Vec<usize>)> {
    let dims = x.dims();
    let k = dims[dims.len() - 1];
    let mut out = dims[..dims.len() - 1].to_vec();
    out.push(l.weight().dim(0)?);
    Ok((x.elem_count() / k.max(1), k, out))
}

/// Mixed precision ("autocast"): half-precision weights applied to an f32 activation stream. The
/// product runs in the weights' dtype and its result comes back in f32, so residual sums,
/// LayerNorm, softmax and pooling all stay f32 (bf16 throughout put the cell embeddings' cosine to
/// f32 at about 0.99 on random models; see README "Benchmarks").
fn autocast(l: &Linear, x: &Tensor) -> Option<candle_core::DType> {
    let w = l.weight().dtype();
    (matches!(w, candle_core::DType::BF16 | candle_core::DType::F16)
        && x.dtype() == candle_core::DType::F32)
        .then_some(w)
}

/// `x @ w^T + bias`, as `candle_nn::Linear::forward`.
pub fn linear(l: &Linear, x: &Tensor) -> Result<Tensor> {
    if let Some(half) = autocast(l, x) {
        return linear(l, &x.to_dtype(half)?)?.to_dtype(x.dtype());
    }
    if !use_blas(x, l.weight()) || !x.is_contiguous() {
        return l.forward(x);
    }
    #[cfg(feature = "openblas")]
    if let Some(b) = l.bias() {
        let (rows, k, out) = rows_k_out(x, l)?;
        return blas::affine_act(&x.reshape((rows, k))?, &l.weight().t()?, b, None)?.reshape(out);
    }
    broadcast_matmul(x, &l.weight().t()?)
}

/// Self-attention of all heads from the packed `qkv` [B, L, 3D] (queries, keys, values side by side,
/// as `in_proj` makes them) without materialising the B x H x L x L scores: per head and block of
/// query rows, the scores go to a small buffer (one sgemm, the 1/sqrt(e) scale as its alpha), get
/// the additive `mask` [B, L] and a softmax in place, and one more sgemm writes the block's output
/// straight into [B, L, D] (heads side by side, as `out_proj` takes them). CPU, f32, inference.
#[cfg(feature = "openblas")]
pub fn fused_attention(
    qkv: &Tensor,
    heads: usize,
    scale: f32,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, l, d3) = qkv.dims3()?;
    let mask = match mask {
        Some(m) => Some(
            m.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        ),
        None => None,
    };
    if mask.as_ref().is_some_and(|m| m.len() != b * l) || d3 % (3 * heads) != 0 {
        candle_core::bail!(
            "fused attention: qkv {:?}, {heads} heads, mask of the wrong size",
            qkv.dims()
        );
    }
    qkv.contiguous()?.apply_op1_no_bwd(&blas::Attention {
        heads,
        scale,
        mask,
        shape: (b, l, d3 / 3),
    })
}

#[cfg(feature = "openblas")]
mod blas {
    use std::os::raw::c_int;

    use candle_core::cpu::erf::erf_f32;
    use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
    use rayon::prelude::*;

    const ROW_MAJOR: c_int = 101;
    /// Fewer rows per call than this are not worth a thread of their own.
    const MIN_ROWS_PER_TASK: usize = 32;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    #[link(name = "openblas")]
    extern "C" {
        #[allow(clippy::too_many_arguments)]
        fn cblas_sgemm(
            order: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
        fn openblas_set_num_threads(n: c_int);
    }

    /// How one operand's matrices lie in memory: transposed or not, leading dimension, and the offset
    /// of each batch matrix. `None` when sgemm cannot read it in place.
    struct Operand {
        trans: c_int,
        ld: usize,
        offsets: Vec<usize>,
    }

    fn operand(l: &Layout) -> Option<Operand> {
        let dims = l.dims();
        let st = l.stride();
        let r = dims.len();
        let (rows, cols) = (dims[r - 2], dims[r - 1]);
        let (rs, cs) = (st[r - 2], st[r - 1]);
        let (trans, ld) = if cs == 1 || cols == 1 {
            (NO_TRANS, if rows > 1 { rs } else { cols })
        } else if rs == 1 || rows == 1 {
            (TRANS, if cols > 1 { cs } else { rows })
        } else {
            return None;
        };
        let need = if trans == NO_TRANS { cols } else { rows };
        if ld < need.max(1) || ld > c_int::MAX as usize {
            return None;
        }
        let batch = &dims[..r - 2];
        let mut offsets = Vec::with_capacity(batch.iter().product());
        let mut idx = vec![0usize; batch.len()];
        for _ in 0..batch.iter().product::<usize>() {
            offsets.push(l.start_offset() + idx.iter().zip(st).map(|(i, s)| i * s).sum::<usize>());
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < batch[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Some(Operand { trans, ld, offsets })
    }

    /// Shapes of `a @ b` (equal batch dims): (batch dims, m, k, n).
    fn product_shape(l1: &Layout, l2: &Layout) -> Result<(Vec<usize>, usize, usize, usize)> {
        let (da, db) = (l1.dims(), l2.dims());
        let r = da.len();
        if r < 2 || db.len() != r || db[..r - 2] != da[..r - 2] || db[r - 2] != da[r - 1] {
            candle_core::bail!("openblas-sgemm: shapes {da:?} and {db:?} do not multiply");
        }
        let (m, k, n) = (da[r - 2], da[r - 1], db[r - 1]);
        if [m, n, k].iter().any(|&d| d > c_int::MAX as usize) {
            candle_core::bail!("openblas-sgemm: a dimension exceeds the BLAS integer range");
        }
        Ok((da[..r - 2].to_vec(), m, k, n))
    }

    fn f32_data(s: &CpuStorage) -> Result<&[f32]> {
        match s {
            CpuStorage::F32(v) => Ok(v),
            _ => candle_core::bail!("openblas-sgemm: f32 operands only"),
        }
    }

    /// `c = a @ b + beta * c` for every batch matrix; `c` holds `batch * m * n` values (with
    /// `beta == 0` it may be uninitialised: BLAS then never reads it).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        a: &[f32],
        l1: &Layout,
        b: &[f32],
        l2: &Layout,
        (m, k, n): (usize, usize, usize),
        beta: f32,
        c: *mut f32,
    ) -> Result<()> {
        let (Some(oa), Some(ob)) = (operand(l1), operand(l2)) else {
            candle_core::bail!("openblas-sgemm: operand layout not supported (make it contiguous)");
        };
        if k == 0 {
            // sgemm may return before touching C when k = 0.
            let len = oa.offsets.len() * m * n;
            // SAFETY: the caller sized `c` for every batch matrix.
            unsafe { std::slice::from_raw_parts_mut(c, len) }
                .iter_mut()
                .for_each(|v| *v *= beta);
            return Ok(());
        }
        // Work items (matrix, first row, rows): one per matrix when there are enough of them for
        // every thread, else each matrix's rows split. OpenBLAS runs single-threaded inside them: its
        // own workers spin-wait between calls and took CPU from candle's threads (bench: about 8%).
        static SINGLE_THREADED: std::sync::Once = std::sync::Once::new();
        // SAFETY: plain setter of OpenBLAS's pool size, before this process's first product.
        SINGLE_THREADED.call_once(|| unsafe { openblas_set_num_threads(1) });
        let threads = rayon::current_num_threads().max(1);
        let batch = oa.offsets.len();
        let parts = if batch >= threads {
            1
        } else {
            threads.div_ceil(batch)
        };
        let chunk = m.div_ceil(parts).max(MIN_ROWS_PER_TASK.min(m)).max(1);
        let tasks: Vec<(usize, usize, usize)> = (0..batch)
            .flat_map(|i| (0..m).step_by(chunk).map(move |r| (i, r, chunk.min(m - r))))
            .collect();
        let (a_ptr, b_ptr, c_ptr) = (a.as_ptr() as usize, b.as_ptr() as usize, c as usize);
        tasks.par_iter().for_each(|&(i, r0, rows)| {
            let (pa, pb) = (oa.offsets[i], ob.offsets[i]);
            // Row r0 of op(A): row-major rows start at r0 * ld, transposed ones at column r0.
            let a_off = pa + if oa.trans == NO_TRANS { r0 * oa.ld } else { r0 };
            // SAFETY: the layouts' offsets and strides address elements inside `a` and `b`
            // (candle guarantees its layouts fit their storage); the caller sized `c`, and the
            // tasks write disjoint row ranges of it.
            unsafe {
                cblas_sgemm(
                    ROW_MAJOR,
                    oa.trans,
                    ob.trans,
                    rows as c_int,
                    n as c_int,
                    k as c_int,
                    1.0,
                    (a_ptr as *const f32).add(a_off),
                    oa.ld as c_int,
                    (b_ptr as *const f32).add(pb),
                    ob.ld as c_int,
                    beta,
                    (c_ptr as *mut f32).add(i * m * n + r0 * n),
                    n as c_int,
                )
            }
        });
        Ok(())
    }

    struct Sgemm;

    impl CustomOp2 for Sgemm {
        fn name(&self) -> &'static str {
            "openblas-sgemm"
        }

        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (batch, m, k, n) = product_shape(l1, l2)?;
            let len = batch.iter().product::<usize>() * m * n;
            let mut c: Vec<f32> = Vec::with_capacity(len);
            if len > 0 {
                if k == 0 {
                    c.resize(len, 0.0);
                } else {
                    let p = c.spare_capacity_mut().as_mut_ptr() as *mut f32;
                    gemm(f32_data(s1)?, l1, f32_data(s2)?, l2, (m, k, n), 0.0, p)?;
                    // SAFETY: with beta = 0 and k > 0 sgemm wrote all `len` values.
                    unsafe { c.set_len(len) };
                }
            }
            let mut dims = batch;
            dims.extend([m, n]);
            Ok((CpuStorage::F32(c), Shape::from(dims)))
        }

        fn bwd(
            &self,
            a: &Tensor,
            b: &Tensor,
            _res: &Tensor,
            grad: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>)> {
            Ok((Some(matmul(grad, &b.t()?)?), Some(matmul(&a.t()?, grad)?)))
        }
    }

    /// `x @ wt + bias` for 2-D `x` [rows, k], `wt` [k, n], `bias` [n]: the output starts as the bias
    /// rows and sgemm adds the product (beta = 1), one pass fewer than a product then an add.
    struct Affine(Option<super::Act>);

    impl CustomOp3 for Affine {
        fn name(&self) -> &'static str {
            "openblas-affine"
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
            let (batch, m, k, n) = product_shape(l1, l2)?;
            if !batch.is_empty() || l3.dims() != [n] {
                candle_core::bail!("openblas-affine: 2-D operands and a bias of {n} expected");
            }
            let bias = crate::model::kernels::contiguous_f32(s3, l3, "openblas-affine: the bias")?;
            let mut c = Vec::with_capacity(m * n);
            for _ in 0..m {
                c.extend_from_slice(bias);
            }
            if m * n > 0 {
                gemm(
                    f32_data(s1)?,
                    l1,
                    f32_data(s2)?,
                    l2,
                    (m, k, n),
                    1.0,
                    c.as_mut_ptr(),
                )?;
            }
            // candle's own per-element formulas, so the values equal the unfused ops'.
            match self.0 {
                Some(super::Act::Relu) => c.par_iter_mut().for_each(|v| *v = v.max(0.0)),
                Some(super::Act::GeluErf) => c.par_iter_mut().for_each(|v| {
                    *v = (erf_f32(*v * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * *v
                }),
                None => {}
            }
            Ok((CpuStorage::F32(c), Shape::from((m, n))))
        }

        fn bwd(
            &self,
            x: &Tensor,
            wt: &Tensor,
            _bias: &Tensor,
            _res: &Tensor,
            grad: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            if self.0.is_some() {
                // Never recorded: linear_act fuses only outside autograd.
                candle_core::bail!("openblas-affine: no backward pass with a fused activation");
            }
            Ok((
                Some(matmul(grad, &wt.t()?)?),
                Some(matmul(&x.t()?, grad)?),
                Some(grad.sum(0)?),
            ))
        }
    }

    /// See [`super::fused_attention`].
    pub(super) struct Attention {
        pub heads: usize,
        pub scale: f32,
        pub mask: Option<Vec<f32>>,
        pub shape: (usize, usize, usize),
    }

    /// Query rows per task: the scores buffer holds QUERY_BLOCK x L floats.
    const QUERY_BLOCK: usize = 128;

    impl candle_core::CustomOp1 for Attention {
        fn name(&self) -> &'static str {
            "fused-attention"
        }

        fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            let (b, n, d) = self.shape;
            let qkv = crate::model::kernels::contiguous_f32(s, l, "fused attention: qkv")?;
            if qkv.len() != b * n * 3 * d {
                candle_core::bail!(
                    "fused attention: qkv holds {} values, not {b} x {n} x {}",
                    qkv.len(),
                    3 * d
                );
            }
            let (h, e) = (self.heads, d / self.heads);
            if [n, d, 3 * d].iter().any(|&x| x > c_int::MAX as usize) {
                candle_core::bail!("fused attention: a dimension exceeds the BLAS integer range");
            }
            let mut out: Vec<f32> = Vec::with_capacity(b * n * d);
            let tasks: Vec<(usize, usize, usize)> = (0..b)
                .flat_map(|bi| {
                    (0..h).flat_map(move |hi| (0..n).step_by(QUERY_BLOCK).map(move |r| (bi, hi, r)))
                })
                .collect();
            let (q_ptr, o_ptr) = (
                qkv.as_ptr() as usize,
                out.spare_capacity_mut().as_mut_ptr() as usize,
            );
            tasks.par_iter().for_each(|&(bi, hi, r0)| {
                let rows = QUERY_BLOCK.min(n - r0);
                let mut scores = vec![0f32; rows * n];
                let base = bi * n * 3 * d;
                let (q, k, v) = (
                    base + r0 * 3 * d + hi * e,
                    base + d + hi * e,
                    base + 2 * d + hi * e,
                );
                // SAFETY: offsets address this batch item's rows inside `qkv` (length checked
                // above); `scores` holds rows x n; each task writes its own rows x e block of `out`,
                // which has room for b * n * d values.
                unsafe {
                    let p = q_ptr as *const f32;
                    cblas_sgemm(
                        ROW_MAJOR,
                        NO_TRANS,
                        TRANS,
                        rows as c_int,
                        n as c_int,
                        e as c_int,
                        self.scale,
                        p.add(q),
                        (3 * d) as c_int,
                        p.add(k),
                        (3 * d) as c_int,
                        0.0,
                        scores.as_mut_ptr(),
                        n as c_int,
                    );
                    for row in scores.chunks_mut(n) {
                        if let Some(m) = &self.mask {
                            row.iter_mut()
                                .zip(&m[bi * n..(bi + 1) * n])
                                .for_each(|(s, m)| *s += m);
                        }
                        crate::model::kernels::softmax_in_place(row);
                    }
                    cblas_sgemm(
                        ROW_MAJOR,
                        NO_TRANS,
                        NO_TRANS,
                        rows as c_int,
                        e as c_int,
                        n as c_int,
                        1.0,
                        scores.as_ptr(),
                        n as c_int,
                        p.add(v),
                        (3 * d) as c_int,
                        0.0,
                        (o_ptr as *mut f32).add(bi * n * d + r0 * d + hi * e),
                        d as c_int,
                    );
                }
            });
            // SAFETY: the tasks cover every (batch item, head, row) block, so all b * n * d values
            // were written (with n = 0 there are none).
            unsafe { out.set_len(b * n * d) };
            Ok((CpuStorage::F32(out), Shape::from((b, n, d))))
        }
    }

    fn fix(t: &Tensor) -> Result<Tensor> {
        if operand(t.layout()).is_some() {
            Ok(t.clone())
        } else {
            t.contiguous()
        }
    }

    /// `act(x @ wt + bias)` (shapes as [`Affine`]); with an activation, outside autograd only.
    pub(super) fn affine_act(
        x: &Tensor,
        wt: &Tensor,
        bias: &Tensor,
        act: Option<super::Act>,
    ) -> Result<Tensor> {
        let (x, wt, bias) = (fix(x)?, fix(wt)?, bias.contiguous()?);
        match act {
            None => x.apply_op3(&wt, &bias, Affine(None)),
            Some(_) => x.apply_op3_no_bwd(&wt, &bias, &Affine(act)),
        }
    }

    pub(super) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        fix(a)?.apply_op2(&fix(b)?, Sgemm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Every operand layout the model produces (contiguous, transposed, batched, narrowed, size-1
    /// dims) gives candle's product.
    #[test]
    fn products_match_candle() {
        let dev = Device::Cpu;
        let r = |s: &[usize]| Tensor::randn(0f32, 1.0, s, &dev).unwrap();
        let a = r(&[2, 3, 5, 7]);
        let b = r(&[2, 3, 7, 4]);
        let cases: Vec<(Tensor, Tensor)> = vec![
            (r(&[5, 7]), r(&[7, 4])),
            (r(&[5, 7]), r(&[4, 7]).t().unwrap()),
            (r(&[7, 5]).t().unwrap(), r(&[7, 4])),
            (a.clone(), b.clone()),
            (a.clone(), r(&[2, 3, 4, 7]).t().unwrap()),
            (r(&[2, 3, 7, 5]).t().unwrap(), b.clone()),
            (a.narrow(2, 1, 3).unwrap(), b.clone()),
            (r(&[1, 7]), r(&[7, 1])),
            (r(&[6, 1]), r(&[1, 3])),
            (r(&[3, 2, 8]).transpose(0, 1).unwrap(), r(&[2, 8, 3])),
        ];
        for (i, (x, y)) in cases.iter().enumerate() {
            let got = matmul(x, y).unwrap();
            let want = x
                .contiguous()
                .unwrap()
                .matmul(&y.contiguous().unwrap())
                .unwrap();
            assert_eq!(got.dims(), want.dims(), "case {i}");
            assert!(max_diff(&got, &want) < 1e-5, "case {i}");
        }
        let x = r(&[2, 9, 7]);
        let l = Linear::new(r(&[4, 7]), Some(r(&[4])));
        assert!(max_diff(&linear(&l, &x).unwrap(), &l.forward(&x).unwrap()) < 1e-5);
        for act in [Act::Relu, Act::GeluErf] {
            let (a, b) = (
                linear_act(&l, &x, act).unwrap(),
                act.apply(&l.forward(&x).unwrap()).unwrap(),
            );
            assert!(max_diff(&a, &b) < 1e-5, "{act:?}");
            let unfused = act.apply(&linear(&l, &x).unwrap()).unwrap();
            let bits = |t: &Tensor| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(bits(&a), bits(&unfused), "{act:?}");
        }
        let p = r(&[4, 7]);
        assert!(
            max_diff(
                &broadcast_matmul(&x, &p.t().unwrap()).unwrap(),
                &x.broadcast_matmul(&p.t().unwrap()).unwrap()
            ) < 1e-5
        );
    }

    #[test]
    fn gradients_match_candle() {
        let dev = Device::Cpu;
        let a = candle_core::Var::randn(0f32, 1.0, (3, 6, 5), &dev).unwrap();
        let b = candle_core::Var::randn(0f32, 1.0, (3, 5, 4), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 6, 4), &dev).unwrap();
        let g1 = (matmul(&a, &b.t().unwrap().t().unwrap()).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (a.matmul(&b).unwrap() * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&a, &b] {
            let (x, y) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(max_diff(x, y) < 1e-5);
        }
        // The fused affine product (linear layers) against candle's Linear.
        let wt = candle_core::Var::randn(0f32, 1.0, (4, 5), &dev).unwrap();
        let bias = candle_core::Var::randn(0f32, 1.0, 4, &dev).unwrap();
        let l = Linear::new(wt.as_tensor().clone(), Some(bias.as_tensor().clone()));
        let w2 = Tensor::randn(0f32, 1.0, (3, 6, 4), &dev).unwrap();
        let loss = |y: Tensor| (y * &w2).unwrap().sum_all().unwrap().backward().unwrap();
        let (g1, g2) = (loss(linear(&l, &a).unwrap()), loss(l.forward(&a).unwrap()));
        for v in [&a, &wt, &bias] {
            assert!(max_diff(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-5);
        }
    }

    #[cfg(feature = "openblas")]
    #[test]
    fn fused_attention_matches_the_composite_ops() {
        let dev = Device::Cpu;
        let (b, l, heads, d) = (2, 300, 4, 32);
        let e = d / heads;
        let qkv = Tensor::randn(0f32, 1.0, (b, l, 3 * d), &dev).unwrap();
        let mut m = vec![0f32; b * l];
        m[l + 250..].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
        let mask = Tensor::from_vec(m, (b, 1, 1, l), &dev).unwrap();
        let scale = (e as f32).powf(-0.5);
        let got = fused_attention(&qkv, heads, scale, Some(&mask)).unwrap();
        let part = |i: usize| {
            qkv.narrow(2, i * d, d)
                .unwrap()
                .reshape((b, l, heads, e))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = ((q * scale as f64).unwrap().matmul(&k.t().unwrap()).unwrap())
            .broadcast_add(&mask)
            .unwrap();
        let p = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let want = p
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, l, d))
            .unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
    }
}

//! Data-parallel training: one process per GPU, gradients summed across processes by NCCL (cudarc's
//! bindings, as candle uses them) behind the `nccl` cargo feature. Rank and world size come from the
//! launcher's usual variables; a world of one is plain training, with no communicator at all.
//!
//! Every rank draws the same global batch (batch × world cells, from the same seeded order and random
//! stream) and keeps every world-th cell from its rank on, so all ranks share one data position and one
//! random state: a checkpoint written by rank 0 resumes every rank exactly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};

/// Where this process sits in a data-parallel job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world: usize,
    /// Index of this process on its node: the GPU it takes when `--device cuda` names none.
    pub local_rank: usize,
}

impl Default for DistEnv {
    fn default() -> Self {
        Self {
            rank: 0,
            world: 1,
            local_rank: 0,
        }
    }
}

/// Largest world size accepted (a sanity bound on an environment variable).
const MAX_WORLD: usize = 1 << 16;

impl DistEnv {
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// torchrun / `torch.distributed` variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`) when
    /// `WORLD_SIZE` is set, else SLURM's (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`) when
    /// `SLURM_NTASKS` is set, else a single process.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let num = |k: &str| -> Result<Option<usize>> {
            match get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            {
                None => Ok(None),
                Some(v) => v.parse::<usize>().map(Some).with_context(|| {
                    format!("environment variable {k}='{v}' is not a whole number")
                }),
            }
        };
        let (rank, world, local, names) = if let Some(w) = num("WORLD_SIZE")? {
            (num("RANK")?, w, num("LOCAL_RANK")?, "RANK/WORLD_SIZE")
        } else if let Some(w) = num("SLURM_NTASKS")? {
            (
                num("SLURM_PROCID")?,
                w,
                num("SLURM_LOCALID")?,
                "SLURM_PROCID/SLURM_NTASKS",
            )
        } else {
            return Ok(Self::default());
        };
        if world == 0 || world > MAX_WORLD {
            bail!("{names}: world size {world} is out of range (1..={MAX_WORLD})");
        }
        let rank = match rank {
            Some(r) => r,
            None if world == 1 => 0,
            None => bail!("{names}: the world size is {world} but the rank is not set"),
        };
        if rank >= world {
            bail!("{names}: rank {rank} is not below the world size {world}");
        }
        Ok(Self {
            rank,
            world,
            local_rank: local.unwrap_or(0),
        })
    }

    pub fn is_single(&self) -> bool {
        self.world == 1
    }

    /// Whether the cell at `index` of a global batch belongs to this rank.
    pub fn owns(&self, index: usize) -> bool {
        index % self.world == self.rank
    }
}

/// Sums gradients (and the loss) over all ranks and divides by the world size: every rank then holds
/// the mean of the per-rank gradients (as PyTorch's DDP does) and takes the same optimiser step.
pub trait GradReduce {
    fn world(&self) -> usize;
    /// `loss` is this rank's loss; returns the mean over ranks. A parameter without a gradient on
    /// this rank contributes zeros (every rank must send the same buffer).
    fn all_reduce_mean(
        &self,
        grads: &mut [Option<Tensor>],
        params: &[(String, Var)],
        loss: f64,
    ) -> Result<f64>;
}

/// All gradients in one flat f32 buffer with the loss appended (one collective per step), and back.
pub fn flatten(grads: &[Option<Tensor>], params: &[(String, Var)], loss: f64) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(params.len() + 1);
    let device = params
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    for (g, (_, v)) in grads.iter().zip(params) {
        parts.push(match g {
            Some(g) => g.to_dtype(candle_core::DType::F32)?.flatten_all()?,
            None => Tensor::zeros(v.elem_count(), candle_core::DType::F32, &device)?,
        });
    }
    parts.push(Tensor::new(&[loss as f32], &device)?);
    Ok(Tensor::cat(&parts, 0)?)
}

/// Inverse of [`flatten`] after the sum: every gradient divided by `world`, and the mean loss.
pub fn unflatten(
    flat: &Tensor,
    grads: &mut [Option<Tensor>],
    params: &[(String, Var)],
    world: usize,
) -> Result<f64> {
    let scale = 1.0 / world as f64;
    let mut at = 0;
    for (g, (_, v)) in grads.iter_mut().zip(params) {
        let n = v.elem_count();
        let part = (flat.narrow(0, at, n)?.reshape(v.shape())? * scale)?;
        *g = Some(part.to_dtype(v.dtype())?);
        at += n;
    }
    let loss = flat.narrow(0, at, 1)?.to_vec1::<f32>()?[0] as f64 * scale;
    Ok(loss)
}

/// The file through which rank 0 hands the NCCL unique id to the other ranks: `--dist-id-file`, else
/// `<out>/.nccl-id` (the output directory must then be on a file system every rank sees).
pub fn id_file(explicit: Option<&Path>, out: &Path) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.join(".nccl-id"))
}

#[cfg(feature = "nccl")]
pub use self::nccl::NcclReducer;

#[cfg(feature = "nccl")]
mod nccl {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use anyhow::{anyhow, bail, Context, Result};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor, Var};

    use super::{flatten, unflatten, DistEnv, GradReduce};

    /// An NCCL communicator over all ranks, one GPU per process.
    pub struct NcclReducer {
        comm: Comm,
        world: usize,
    }

    /// In-graph sum over ranks of a contiguous f32 tensor (no backward: applied to gradients).
    struct AllReduceSum<'a>(&'a Comm);

    impl CustomOp1 for AllReduceSum<'_> {
        fn name(&self) -> &'static str {
            "nccl-all-reduce-sum"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("NCCL all-reduce needs CUDA tensors")
        }

        fn cuda_fwd(
            &self,
            s: &CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let Some((start, end)) = l.contiguous_offsets() else {
                candle_core::bail!("NCCL all-reduce: the buffer is not contiguous");
            };
            let src = s.as_cuda_slice::<f32>()?.slice(start..end);
            let dev = s.device().clone();
            let mut dst = dev
                .cuda_stream()
                .alloc_zeros::<f32>(end - start)
                .map_err(|e| candle_core::Error::Cuda(Box::new(e)))?;
            self.0
                .all_reduce(&src, &mut dst, &ReduceOp::Sum)
                .map_err(|e| candle_core::Error::Cuda(format!("NCCL all-reduce: {e:?}").into()))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
        }
    }

    impl NcclReducer {
        /// Joins the communicator: rank 0 creates the unique id and publishes it in `id_file`
        /// (atomically); the others wait for it (at most `timeout`). Rank 0 removes the file once
        /// every rank has joined (`ncclCommInitRank` returns only then).
        pub fn new(
            env: &DistEnv,
            device: &Device,
            id_file: &Path,
            timeout: Duration,
        ) -> Result<Self> {
            let Device::Cuda(cuda) = device else {
                bail!(
                    "data-parallel training (world size {}) needs a CUDA device",
                    env.world
                );
            };
            let id = if env.rank == 0 {
                let id = Id::new().map_err(|e| anyhow!("creating the NCCL id: {e:?}"))?;
                write_id(id_file, &id)?;
                id
            } else {
                read_id(id_file, timeout)?
            };
            let comm =
                Comm::from_rank(cuda.cuda_stream(), env.rank, env.world, id).map_err(|e| {
                    anyhow!(
                        "joining the NCCL communicator (rank {} of {}): {e:?}",
                        env.rank,
                        env.world
                    )
                })?;
            if env.rank == 0 {
                let _ = std::fs::remove_file(id_file);
            }
            log::info!("NCCL: rank {} of {} joined", env.rank, env.world);
            Ok(Self {
                comm,
                world: env.world,
            })
        }
    }

    impl GradReduce for NcclReducer {
        fn world(&self) -> usize {
            self.world
        }

        fn all_reduce_mean(
            &self,
            grads: &mut [Option<Tensor>],
            params: &[(String, Var)],
            loss: f64,
        ) -> Result<f64> {
            let flat = flatten(grads, params, loss)?.contiguous()?;
            let summed = flat.apply_op1_no_bwd(&AllReduceSum(&self.comm))?;
            unflatten(&summed, grads, params, self.world)
        }
    }

    fn write_id(path: &Path, id: &Id) -> Result<()> {
        let hex: String = id
            .internal()
            .iter()
            .map(|&c| format!("{:02x}", c as u8))
            .collect();
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp: PathBuf = dir.join(format!(
            ".{}.tmp{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("nccl-id"),
            std::process::id()
        ));
        std::fs::write(&tmp, hex + "\n").with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    fn read_id(path: &Path, timeout: Duration) -> Result<Id> {
        let t0 = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(path) {
                let s = s.trim();
                if s.len() != 256 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("{}: not an NCCL id (256 hex digits)", path.display());
                }
                let mut internal = [0 as std::ffi::c_char; 128];
                for (i, c) in internal.iter_mut().enumerate() {
                    *c = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)? as std::ffi::c_char;
                }
                return Ok(Id::uninit(internal));
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{}: rank 0 did not publish the NCCL id within {} s",
                    path.display(),
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<DistEnv> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn launcher_variables() {
        assert_eq!(env(&[]).unwrap(), DistEnv::default());
        let t = env(&[("RANK", "3"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1")]).unwrap();
        assert_eq!((t.rank, t.world, t.local_rank), (3, 8, 1));
        let s = env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_LOCALID", "2"),
        ])
        .unwrap();
        assert_eq!((s.rank, s.world, s.local_rank), (5, 16, 2));
        // torchrun inside a SLURM allocation: torchrun's variables win.
        let both = env(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ])
        .unwrap();
        assert_eq!((both.rank, both.world), (1, 2));
        assert!(env(&[("SLURM_NTASKS", "1")]).unwrap().is_single());
        for bad in [
            vec![("RANK", "2"), ("WORLD_SIZE", "2")],
            vec![("WORLD_SIZE", "4")],
            vec![("RANK", "x"), ("WORLD_SIZE", "2")],
            vec![("WORLD_SIZE", "0")],
            vec![("WORLD_SIZE", "99999999")],
        ] {
            assert!(env(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranks_partition_a_global_batch() {
        let world = 3;
        let mut seen = [0; 12];
        for rank in 0..world {
            let e = DistEnv {
                rank,
                world,
                local_rank: 0,
            };
            for (i, s) in seen.iter_mut().enumerate() {
                if e.owns(i) {
                    *s += 1;
                }
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
        assert!((0..5).all(|i| DistEnv::default().owns(i)));
    }

    #[test]
    fn flatten_round_trip_averages() {
        let dev = candle_core::Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[5f32, 6., 7.], &dev).unwrap()).unwrap();
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b)];
        let mut grads = vec![Some(a.as_tensor().clone()), None];
        let flat = flatten(&grads, &params, 0.5).unwrap();
        assert_eq!(flat.dims(), &[8]);
        // As if two ranks sent the same buffer.
        let summed = (&flat * 2.0).unwrap();
        let loss = unflatten(&summed, &mut grads, &params, 2).unwrap();
        assert!((loss - 0.5).abs() < 1e-7);
        assert_eq!(
            grads[0].as_ref().unwrap().to_vec2::<f32>().unwrap(),
            vec![vec![1., 2.], vec![3., 4.]]
        );
        assert_eq!(
            grads[1].as_ref().unwrap().to_vec1::<f32>().unwrap(),
            vec![0., 0., 0.]
        );
    }
}

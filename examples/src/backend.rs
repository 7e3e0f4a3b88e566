//! Choosing the backend at run time (`--backend ndarray|flex|tch|wgpu|cuda`).

use anyhow::{Result, bail};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::AutodiffBackend;
use moq_burn::MoqBackend;

/// An example's work, generic over the backend, so `--backend` can pick one at run time.
pub trait Experiment {
    /// Runs on backend `B` (an autodiff backend whose inner backend runs MoQ's operations).
    fn run<B>(&self, device: B::Device) -> Result<()>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend;
}

/// Runs `experiment` on the backend named `backend`: `ndarray` (with glibc told to keep freed
/// memory, [`crate::malloc::keep_freed_memory`]; its matmul through OpenBLAS in builds with the
/// `openblas` feature), or `flex` (burn's pure-Rust CPU backend) / `tch` (LibTorch on the
/// CPU) / `wgpu` / `cuda` in builds with the feature of that name.
pub fn run_on(backend: &str, experiment: &impl Experiment) -> Result<()> {
    match backend {
        "ndarray" => {
            crate::malloc::keep_freed_memory();
            experiment.run::<Autodiff<NdArray>>(Default::default())
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => experiment.run::<Autodiff<burn::backend::Wgpu>>(Default::default()),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => bail!("this build has no wgpu backend: rebuild with `--features wgpu`"),
        #[cfg(feature = "cuda")]
        "cuda" => experiment.run::<Autodiff<burn::backend::Cuda>>(Default::default()),
        #[cfg(not(feature = "cuda"))]
        "cuda" => bail!("this build has no cuda backend: rebuild with `--features cuda`"),
        #[cfg(feature = "flex")]
        "flex" => experiment.run::<Autodiff<burn::backend::Flex>>(Default::default()),
        #[cfg(not(feature = "flex"))]
        "flex" => bail!("this build has no Flex backend: rebuild with `--features flex`"),
        #[cfg(feature = "tch")]
        "tch" => experiment.run::<Autodiff<burn::backend::LibTorch>>(Default::default()),
        #[cfg(not(feature = "tch"))]
        "tch" => bail!(
            "this build has no LibTorch backend: run scripts/setup-tch once, then build through \
             it with `--features tch` (README, \"Faster CPU training\")"
        ),
        other => bail!("unknown backend `{other}` (ndarray, flex, tch, wgpu or cuda)"),
    }
}

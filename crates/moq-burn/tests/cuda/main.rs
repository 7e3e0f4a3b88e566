//! moq-burn on burn-cuda: the cases of `tests/gpu/cases.rs` on `burn::backend::Cuda` and its
//! bare `CubeBackend`. Needs an NVIDIA GPU with its driver and NVRTC:
//! `cargo test -p moq-burn --features cuda --test burn-cuda -- --include-ignored`, or the prebuilt
//! binary of the GPU bundle (`scripts/gpu-bundle`).

use burn_cubecl::CubeBackend;
use moq_kernels::cubecl::cuda::CudaRuntime;

/// The backend users hold: `Fusion<CubeBackend<CudaRuntime>>`.
pub type Gpu = burn::backend::Cuda;
/// The same runtime without burn's fusion.
pub type Cube = CubeBackend<CudaRuntime, f32, i32, u8>;
/// The backend's name in failure messages.
pub const NAME: &str = "burn-cuda";

#[path = "../gpu/cases.rs"]
mod cases;
#[path = "../shared/serve.rs"]
mod serve;

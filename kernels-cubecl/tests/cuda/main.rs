//! The kernels against `moq-core`'s reference on cubecl's CUDA runtime: the same cases as the
//! wgpu binary (`tests/gpu/`), compiled for `CudaRuntime`. Needs an NVIDIA GPU with its driver
//! and NVRTC (kernels are compiled at run time):
//! `cargo test -p moq-kernels --features cuda --test kernels-cuda -- --include-ignored`, or the
//! prebuilt binary of the GPU bundle (`scripts/gpu-bundle`).

use cubecl::Runtime;

/// The runtime every case in this binary runs on.
pub type TestRuntime = cubecl::cuda::CudaRuntime;

#[path = "../gpu/common.rs"]
mod common;
#[path = "../gpu/matmul.rs"]
mod matmul;
#[path = "../gpu/quant.rs"]
mod quant;

/// The kernels run through cubecl's CUDA compiler (NVRTC), not another runtime by mistake.
#[test]
#[ignore = "needs a GPU"]
fn the_cuda_compiler_runs_the_kernels() {
    let name = TestRuntime::name(&common::client());
    assert!(name.contains("cuda"), "{name}");
}

//! The kernels against `moq-core`'s reference on cubecl's wgpu runtime: random inputs, odd
//! shapes, every mode. The cases live in `tests/gpu/` and are compiled once per runtime (this
//! file for wgpu, `tests/cuda/main.rs` for CUDA). Needs a wgpu adapter (lavapipe in CI):
//! `cargo test -p moq-kernels --features wgpu --test kernels-wgpu -- --include-ignored` (WGSL), and
//! `--features vulkan` for the SPIR-V compiler.

use cubecl::Runtime;

/// The runtime every case in this binary runs on.
pub type TestRuntime = cubecl::wgpu::WgpuRuntime;

#[path = "../gpu/common.rs"]
mod common;
#[path = "../gpu/matmul.rs"]
mod matmul;
#[path = "../gpu/quant.rs"]
mod quant;

/// The compiler in use is the one the features ask for: SPIR-V with `vulkan` (which unlocks f16
/// and i8 on Vulkan devices), WGSL otherwise.
#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn the_configured_compiler_runs_the_kernels() {
    let name = TestRuntime::name(&common::client());
    if cfg!(feature = "vulkan") {
        assert_eq!(name, "wgpu<spirv>");
    } else {
        assert!(name.starts_with("wgpu<"), "{name}");
    }
}

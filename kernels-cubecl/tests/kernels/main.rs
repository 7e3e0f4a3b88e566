//! The kernels against `moq-core`'s reference on cubecl's wgpu runtime: random inputs, odd
//! shapes, every mode. Needs a wgpu adapter (lavapipe in CI):
//! `cargo test -p moq-kernels --features wgpu -- --include-ignored` (WGSL), and
//! `--features vulkan` for the SPIR-V compiler.

mod matmul;
mod quant;

use cubecl::Runtime;
use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::wgpu::WgpuRuntime;

/// Uniform values in (−1, 1) from the project's seeded generator.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    moq_core::Rng::new(seed).uniform_vec(n)
}

pub fn client() -> ComputeClient<WgpuRuntime> {
    WgpuRuntime::client(&Default::default())
}

pub fn upload<E: CubeElement>(client: &ComputeClient<WgpuRuntime>, data: &[E]) -> Handle {
    client.create_from_slice(E::as_bytes(data))
}

pub fn read<E: CubeElement>(client: &ComputeClient<WgpuRuntime>, h: Handle, len: usize) -> Vec<E> {
    let bytes = client.read_one(h).unwrap();
    E::from_bytes(&bytes)[..len].to_vec()
}

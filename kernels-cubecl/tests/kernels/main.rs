//! The kernels against `moq-core`'s reference on cubecl's wgpu runtime: random inputs, odd
//! shapes, every mode. Needs a wgpu adapter (lavapipe in CI):
//! `cargo test -p moq-kernels --features wgpu -- --include-ignored` (WGSL), and
//! `--features vulkan` for the SPIR-V compiler.
#![cfg(feature = "wgpu")]

mod matmul;
mod quant;

use cubecl::Runtime;
use cubecl::prelude::*;
use cubecl::server::Handle;
use cubecl::wgpu::WgpuRuntime;

/// xorshift64*, uniform in (−1, 1).
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
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

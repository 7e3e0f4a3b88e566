//! What every kernel test uses: seeded inputs, the client of the runtime under test, and
//! uploads and reads of plain slices.

use cubecl::Runtime;
use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::TestRuntime;

/// Uniform values in (−1, 1) from the project's seeded generator.
pub fn random(n: usize, seed: u64) -> Vec<f32> {
    moq_core::Rng::new(seed).uniform_vec(n)
}

pub fn client() -> ComputeClient<TestRuntime> {
    TestRuntime::client(&Default::default())
}

pub fn upload<E: CubeElement>(client: &ComputeClient<TestRuntime>, data: &[E]) -> Handle {
    client.create_from_slice(E::as_bytes(data))
}

pub fn read<E: CubeElement>(client: &ComputeClient<TestRuntime>, h: Handle, len: usize) -> Vec<E> {
    let bytes = client.read_one(h).unwrap();
    E::from_bytes(&bytes)[..len].to_vec()
}

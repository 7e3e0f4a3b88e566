//! moq-burn on burn-wgpu: the cases of `tests/gpu/cases.rs` on `burn::backend::Wgpu` and its
//! bare `CubeBackend`. Needs a wgpu adapter (lavapipe in CI):
//! `cargo test -p moq-burn --features wgpu --test burn-wgpu -- --include-ignored`.

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};

/// The backend users hold: `Fusion<CubeBackend<WgpuRuntime>>`.
pub type Gpu = burn::backend::Wgpu;
/// The same runtime without burn's fusion.
pub type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
/// The backend's name in failure messages.
pub const NAME: &str = "burn-wgpu";

#[path = "../gpu/cases.rs"]
mod cases;
#[path = "../shared/serve.rs"]
mod serve;

//! # moq-kernels
//!
//! cubecl kernels for MoQ, generic over the cubecl `Runtime`, so one source runs on CUDA and on
//! wgpu (Vulkan, Metal, DX12, WebGPU). No burn dependency: `moq-burn` launches them.
//!
//! - [`fake_quantize()`]: fused group-wise fake quantization with every mode of `moq-core`
//!   (symmetric/asymmetric 3–16 bits, ternary, binary, nearest or stochastic rounding with the
//!   same counter-based generator, mixing): a per-group reduction, then one pass over the tensor.
//! - [`quantize()`] to codes on the device ([`DeviceWeights`]: `Packed32` codes, f32 or f16
//!   scales, zero points), [`DeviceWeights::upload`] from a `moq-core` [`PackedTensor`],
//!   [`DeviceWeights::download`] and [`DeviceWeights::dequantize`].
//! - [`matmul()`]: `y = x · dequant(W)` with f32 or f16 activations, accumulating in f32: a
//!   GEMV kernel for `m ≤ 16` (vectorised loads of packed codes, split-K) and a tiled kernel for
//!   larger `m`, chosen by [`choose_kernel`].
//!
//! Every kernel is tested against `moq-core`'s reference on random inputs and odd shapes, on
//! cubecl's wgpu runtime (Mesa's lavapipe gives a CPU Vulkan device where there is no GPU):
//! `cargo test -p moq-kernels --features wgpu -- --include-ignored`, and with the SPIR-V
//! compiler through `--features vulkan`.
//!
//! Features: `wgpu`, `vulkan` (wgpu with the SPIR-V compiler), `cuda`.
#![warn(missing_docs)]

mod error;
pub mod matmul;
pub mod quant;
pub mod weights;

/// The cubecl this crate is built with (runtimes, clients, handles), re-exported.
pub use cubecl;
pub use error::{KernelError, Result};
pub use matmul::{Kernel, choose_kernel, matmul};
/// The packed layouts the kernels read (re-exported from `moq-core`).
pub use moq_core::PackedTensor;
pub use quant::fake_quantize;
pub use weights::{DeviceWeights, quantize};

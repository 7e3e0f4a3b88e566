//! # moq-kernels
//!
//! cubecl kernels for MoQ, generic over the cubecl `Runtime`, so one source runs on CUDA and on
//! wgpu (Vulkan, Metal, DX12, WebGPU). No burn dependency: `moq-burn` launches them.
//!
//! **Status: started.** Implemented and tested:
//! - [`matmul()`]: `y = x · dequant(W)` for f32 activations and weights packed in `moq-core`'s
//!   `Packed32` layout (any width 1–8, symmetric or asymmetric, f32 scales), accumulating in
//!   f32. It is the untuned reference kernel (one unit per row of `x` and word of `W`), tested
//!   against `moq-core`'s dequantization on odd shapes.
//!
//! Not yet (the moq-kernels issue): fused fake quantization, quantize/dequantize kernels,
//! f16 activations and scales, int8 codes, the tuned GEMV (split-K) and tiled kernels, and the
//! benchmark.
//!
//! Tests run on cubecl's wgpu runtime (Mesa's lavapipe gives a CPU Vulkan device where there is
//! no GPU): `cargo test -p moq-kernels --features wgpu -- --include-ignored`.
//!
//! Features: `wgpu`, `vulkan` (wgpu with the SPIR-V compiler), `cuda`.
#![warn(missing_docs)]

mod error;
pub mod matmul;

pub use error::{KernelError, Result};
pub use matmul::{DeviceWeights, matmul};
/// The packed layouts the kernels read (re-exported from `moq-core`).
pub use moq_core::pack;

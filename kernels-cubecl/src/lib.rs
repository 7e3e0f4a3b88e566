//! # moq-kernels
//!
//! cubecl kernels for MoQ, generic over the cubecl `Runtime`, so one source runs on CUDA and on
//! wgpu (Vulkan, Metal, DX12, WebGPU). No burn dependency: `moq-burn` launches them.
//!
//! **Status: not implemented yet** (tracked by the issue "moq-kernels: cubecl quantize and
//! low-bit-weight matmul"). It will hold:
//! - fused group-wise fake quantization (every mode of `moq-core`, with the same counter-based
//!   stochastic rounding, [`moq_core::noise`]);
//! - quantize to codes / dequantize in `moq-core`'s packed layouts ([`mod@moq_core::pack`]);
//! - low-bit-weight matmul `y = x · dequant(W)` for 8- and 4-bit weights: a GEMV-style kernel for
//!   small batch and a tiled kernel for larger batch.
//!
//! Tests will compare every kernel with `moq-core`'s reference on cubecl's wgpu runtime (Mesa's
//! lavapipe gives a CPU Vulkan device where there is no GPU).
//!
//! Features: `wgpu`, `vulkan` (wgpu with the SPIR-V compiler), `cuda`.
#![warn(missing_docs)]

/// The packed layouts the kernels will read (re-exported from `moq-core`).
pub use moq_core::pack;

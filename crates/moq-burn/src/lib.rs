//! # moq-burn
//!
//! Mixture-of-Quantization for burn users: wrap the optimizer, train as before, and export
//! weights that run as real INT8/INT4 at inference.
//!
//! **Status: the algorithm is in [`moq_core`] (re-exported here); the burn integration is not
//! implemented yet** (tracked by the issues "Train with MoQ in burn" and "moq-kernels"). It will
//! hold:
//! - a backend extension trait with quantize / fake-quantize / dequantize / low-bit matmul,
//!   implemented from tensor ops for any backend (NdArray), with a straight-through backward for
//!   `Autodiff<B>`, and with the `moq-kernels` cubecl kernels for burn-wgpu and burn-cuda
//!   (including their default `Fusion` wrapping);
//! - the optimizer wrapper that keeps full-precision masters and writes the scheduled
//!   fake-quantized weights after each step (DESIGN.md section 3, "Where it runs");
//! - `QuantizedLinear` and safetensors export/import of codes and scales.
//!
//! Backends are chosen by features passed down to burn and the kernels: `ndarray` (default),
//! `wgpu`, `vulkan`, `cuda`.
#![warn(missing_docs)]

pub use moq_core;

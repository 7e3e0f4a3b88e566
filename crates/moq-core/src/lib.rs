//! # moq-core
//!
//! Mixture-of-Quantization (MoQ) without a framework: everything of the algorithm that does not
//! need tensors on a device. docs/algorithm.md is the specification; each piece lives in the
//! module named after it there:
//!
//! - [`config`]: DeepSpeed's `quantize_training` section, parsed with errors that name the key,
//!   and a typed builder;
//! - [`schedule`]: the per-layer bit schedule (offset, doubling period, eigenvalue factor,
//!   mixing ratio), serialisable so runs resume bit for bit;
//! - [`allocate`]: second-order bit allocation, each layer's width from its sensitivity under
//!   a size budget, solved exactly;
//! - [`plan`](mod@plan): when each layer reaches each width, and the largest period that reaches the target;
//! - [`quantizer`]: group-wise fake and real quantization on f32 / f16 / bf16 slices (symmetric,
//!   asymmetric, ternary, binary; nearest or reproducible stochastic rounding);
//! - [`noise`]: the counter-based generator behind stochastic rounding;
//! - [`layout`]: the one authority on the packed layout's sizes and checks ([`PackedShape`]):
//!   widths stored and multiplied, words per row, scale bytes, the kernels' 32-bit index limit;
//! - [`pack`](mod@pack): int8 and packed-u32 code layouts with f32/f16 scales, as the kernels read them;
//! - [`matmul`]: `y = x · dequant(W)` on the CPU straight from packed codes, in registers;
//! - `simd`: the vector instruction sets the hot loops are compiled for ([`Isa`], found at run
//!   time), and every `unsafe` line of the crate;
//! - [`export`]: the safetensors export of packed tensors and the model's other tensors;
//! - [`input`]: files a user supplies, read bounded (regular files only, sizes checked before
//!   allocating, safetensors header first, JSON without duplicate keys);
//! - [`error`]: the crate's one error type;
//! - [`rng`]: a small seeded generator for shuffles and test data (not the quantizer's noise);
//! - `plot` (feature `plot`): SVG figures of schedules and training curves.
//!
//! This crate depends on neither burn nor cubecl; `moq-burn` and `moq-kernels` build on it, and
//! its quantizer is the reference their kernels are tested against.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod allocate;
pub mod config;
pub mod error;
pub mod export;
pub mod input;
pub mod layout;
pub mod matmul;
pub mod noise;
pub mod pack;
pub mod plan;
#[cfg(feature = "plot")]
pub mod plot;
pub mod quantizer;
pub mod rng;
pub mod schedule;
mod simd;

pub use config::{
    EigenvalueConfig, MixingConfig, QuantType, QuantizeConfig, QuantizeConfigBuilder, Rounding,
};
pub use error::{MoqError, Result};
pub use layout::{
    KERNEL_BITS, MAX_INDEXED, PACKED_BITS, PackedShape, check_indexable, codes_per_word,
};
pub use noise::NoiseKey;
pub use pack::{CodeLayout, PackedCodes, PackedScales, PackedTensor, ScaleFormat, pack, unpack};
pub use plan::{LayerPlan, Plan, plan};
pub use quantizer::{
    Element, QuantSpec, QuantizedTensor, dequantize, fake_quantize, fake_quantize_in_place,
    fake_quantize_mixed, quantize,
};
pub use rng::Rng;
pub use schedule::{BitDrop, LayerSpec, LayerState, Schedule, StepReport};
pub use simd::Isa;

//! # moq-burn
//!
//! Mixture-of-Quantization for burn users: wrap the optimizer, train as before.
//!
//! - [`Moq`] / [`MoqOptimizer`] ([`optim`]): the optimizer wrapper. It keeps full-precision
//!   masters, lets the inner optimizer (SGD, Adam, AdamW, with gradient clipping and learning-rate
//!   schedules as you had them) update them with the gradient taken at the quantized weights, and
//!   writes the scheduled fake-quantized weights into the model after each step.
//! - [`select`]: module-path patterns choosing the quantized parameters, their layers and bit
//!   groups (`encoder.layers.{i}`).
//! - [`MoqBackend`] ([`backend`]): the quantization operations (fake quantization, low-bit
//!   matmul) as an extension of burn's `Backend`: `moq-kernels` on burn-wgpu and burn-cuda
//!   (`CubeBackend` and its `Fusion` wrapping), generic implementations elsewhere (NdArray), and
//!   a straight-through backward for `Autodiff<B>`.
//!
//! - `BitsMetric` and `MixingMetric` (module `metric`, feature `train`): the schedule on
//!   burn-train's `Learner` dashboard.
//! - [`MoqOptimizer::export`] ([`optim::export`]): the trained weights as packed low-bit codes
//!   in a safetensors file (`moq inspect` reads it).
//! - [`serve`]: an export served in the user's own model: [`load_burn_quantized`] (burn's
//!   quantized tensors, any model), [`load_codes`] (packed codes in [`MoqLinear`] layers,
//!   burn's `Linear` with one type name changed) and [`load_dequantized`] (float), each with a
//!   [`LoadReport`] of what it held how and the bytes on the device; [`PackedWeight`], the one
//!   packed-weight type from the loader to the kernels; [`QuantizedLinear`], a packed layer
//!   built alone from an export; [`to_burn_data`], symmetric 8/4-bit codes as burn's own
//!   quantized tensors (`Q8S`/`Q4S`).
//! - [`HessianProvider`] ([`eigen`]): per-layer Hessian eigenvalues from [`moq_hessian`] that
//!   stretch the periods of sensitive layers (`eigenvalue.enabled`), and, with
//!   [`Moq::auto_bits`], choose each layer's target width under a size budget
//!   ([`LayerAllocation`], docs/widths.md).
//!
//! The algorithm itself is [`moq_core`] (re-exported, as are [`moq_hessian`] and
//! [`moq_kernels`]).
//!
//! Backends are chosen by features passed down to burn: `ndarray` (default), `wgpu`, `vulkan`,
//! `cuda`; `train` adds the burn-train metrics; `collective` adds the module `collective` (data
//! parallel across processes with burn-collective: `replicate` and `RootEigenvalues`).
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
#[cfg(feature = "collective")]
pub mod collective;
pub mod eigen;
pub mod error;
#[cfg(feature = "train")]
pub mod metric;
pub mod optim;
pub mod select;
pub mod serve;

pub use backend::{
    MoqBackend, PackedWeight, fake_quantize, fake_quantize_on_host, fake_quantize_tensor_ops,
    quantized_matmul_tensor_ops,
};
pub use eigen::{EigenHistory, EigenRecord, HessianProvider};
pub use error::{MoqBurnError, Result};
#[cfg(feature = "train")]
pub use metric::{BitsMetric, MixingMetric};
pub use moq_core;
pub use moq_hessian;
/// How parameters are named (module paths): the contract shared with `moq-hessian`.
pub use moq_hessian::path;
pub use moq_kernels;
pub use optim::{
    AutoBits, EigenvalueProvider, FixedEigenvalues, LayerAllocation, Moq, MoqLayer, MoqOptimizer,
    MoqRecord, MoqStatus, StatusSnapshot,
};
pub use serve::{
    Activations, DeviceBytes, Held, LoadReport, LoadedTensor, MoqLinear, MoqWeight,
    QuantizedLinear, Unservable, burn_scheme, load_burn_quantized, load_codes, load_codes_with,
    load_dequantized, to_burn_data,
};

/// The README's Rust examples, compiled and run as doctests so they cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The guide's Rust examples (docs/, the mdBook), compiled and run as doctests.
#[cfg(doctest)]
pub mod book {
    /// docs/quickstart.md
    #[doc = include_str!("../../../docs/quickstart.md")]
    pub struct Quickstart;
    /// docs/deepspeed.md
    #[doc = include_str!("../../../docs/deepspeed.md")]
    pub struct ComingFromDeepSpeed;
    /// docs/introduction.md
    #[doc = include_str!("../../../docs/introduction.md")]
    pub struct Introduction;
    /// docs/config.md
    #[doc = include_str!("../../../docs/config.md")]
    pub struct Config;
    /// docs/widths.md
    #[doc = include_str!("../../../docs/widths.md")]
    pub struct Widths;
}

//! The backend extension: MoQ's tensor operations as a trait on burn's `Backend`.
//!
//! Two generic implementations serve every backend:
//! - [`fake_quantize_on_host`] runs `moq-core`'s quantizer (vectorised, multi-threaded) on the
//!   tensor's host data: on a CPU backend that *is* the fastest path, and it is bit-identical to
//!   the reference by construction. `NdArray` uses it.
//! - [`fake_quantize_tensor_ops`] is built from burn tensor ops and stays on the device (and
//!   `Fusion` can fuse it): for a backend with neither kernels nor a fast host path.
//!
//! burn's cubecl backends (`CubeBackend`: burn-wgpu and burn-cuda, features `wgpu`/`cuda`) run
//! `moq-kernels`. On `Fusion<B>`, the wrapping users hold by default, both operations enter the
//! fusion stream as custom operations (not fused with their neighbours):
//! - fake quantization drains the stream up to its tensor and runs `B`'s kernel at once, since
//!   its result says whether the tensor held a NaN (once per weight per optimizer step);
//! - the low-bit matmul is lazy: its shapes are checked when it is called, and it runs when the
//!   stream does, like any burn op (the inference path).
//!
//! `Autodiff<B>` adds a straight-through backward: the gradient passes through unchanged. Any
//! other backend implements [`MoqBackend`] in three lines by calling one of the two paths.
//! The trait works on primitives (`FloatTensor<Self>`), as burn's own ops do, so a kernel
//! implementation needs no conversion.
//!
//! One file per path:
//! - [`packed`] holds [`PackedWeight`], the packed weight the quantized matmul multiplies with;
//! - [`host`] holds [`fake_quantize_on_host`];
//! - `int8` holds [`Activations`] and the int8-activation kernel's layout of a weight;
//! - [`tensor_ops`] holds [`fake_quantize_tensor_ops`] and [`quantized_matmul_tensor_ops`];
//! - [`autodiff`] holds the straight-through backward;
//! - `ndarray` (feature `ndarray`): NdArray's host paths, the quantized matmul through
//!   [`moq_core::matmul`] on the tensors' buffers in place;
//! - `libtorch` (feature `tch`) and `flex` (feature `flex`): LibTorch and burn's pure-Rust
//!   Flex through the generic host path;
//! - `cube` and `fusion` (features `wgpu`/`cuda`) hold the kernels and the fusion stream.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use moq_core::QuantSpec;

use crate::error::Result;

pub mod autodiff;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
#[cfg(feature = "flex")]
mod flex;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod fusion;
pub mod host;
mod int8;
#[cfg(feature = "tch")]
mod libtorch;
#[cfg(feature = "ndarray")]
mod ndarray;
pub mod packed;
pub mod tensor_ops;

pub use host::fake_quantize_on_host;
pub use int8::{Activations, Int8Layout};
pub use packed::{Matmul, PackedWeight};
pub use tensor_ops::{fake_quantize_tensor_ops, quantized_matmul_tensor_ops};

/// A burn backend that can run MoQ's quantization operations.
pub trait MoqBackend: Backend {
    /// Fake-quantizes `tensor` group-wise over its flat row-major storage and blends:
    /// `ρ·x + (1−ρ)·Q(x)` with `ρ = mix_ratio` (0 gives plain fake quantization). `name`
    /// identifies the tensor in errors (a group count that does not divide it, NaN or Inf).
    /// The result has the input's shape and dtype.
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>>;

    /// `x · dequant(W)` for `x` of shape `[..., k]` and a packed weight `W` `[k, n]`; returns
    /// `[..., n]`. The default is [`quantized_matmul_tensor_ops`] (dequantize with tensor ops,
    /// then multiply); burn's cubecl backends run `moq-kernels`' low-bit matmul, which never
    /// materialises `dequant(W)`.
    fn quantized_matmul(x: FloatTensor<Self>, w: &PackedWeight<Self>) -> Result<FloatTensor<Self>> {
        quantized_matmul_tensor_ops::<Self>(x, w)
    }

    /// The widths of burn's own quantized tensors (`Q8S`, `Q4S`) that this backend loads with
    /// `Tensor::from_data` and multiplies: burn 0.21's NdArray holds 8 bits (its `from_data`
    /// of a `Q4S` tensor is `unimplemented!`), the cubecl backends 8 and 4. The default is none,
    /// so [`crate::load_burn_quantized`] dequantizes on a backend it does not know.
    fn burn_quantized_bits() -> &'static [u32] {
        &[]
    }

    /// Whether [`Self::quantized_matmul`] runs the int8-activation kernel for a weight asked for
    /// it ([`PackedWeight::with_activations`]): NdArray does; the default is no, and such a
    /// weight is then multiplied with float activations.
    fn int8_activations() -> bool {
        false
    }
}

/// [`MoqBackend::fake_quantize`] on a `Tensor`.
pub fn fake_quantize<B: MoqBackend, const D: usize>(
    tensor: Tensor<B, D>,
    name: &str,
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<Tensor<B, D>> {
    let primitive = tensor.into_primitive().tensor();
    Ok(Tensor::from_primitive(TensorPrimitive::Float(
        B::fake_quantize(primitive, name, spec, mix_ratio)?,
    )))
}

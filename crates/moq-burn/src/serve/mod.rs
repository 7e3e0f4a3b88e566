//! Serving an export in the user's own model, of the type it was trained as.
//!
//! Two paths, both one call on the model:
//! - [`load_burn_quantized`] puts each weight burn can hold (symmetric, 8 or 4 bits, groups
//!   that are burn blocks) in as burn's own quantized tensor: any model, no code change, burn's
//!   quantized matmul.
//! - [`load_codes`] puts each weight of a [`MoqLinear`] in as packed codes, multiplied by
//!   `moq-kernels` (burn-wgpu, burn-cuda) or the CPU low-bit matmul (NdArray): every width
//!   1–8, symmetric or asymmetric, any grouping. The model's linear layers are `MoqLinear`
//!   instead of `Linear`: one type name per layer; it trains exactly as `Linear` does.
//!
//! Both say per tensor what they did ([`LoadReport`], also the bytes held on the device), and
//! dequantize or refuse what they cannot serve as asked ([`Unservable`]): a width above 8 bits
//! (a schedule that stopped early), a grouping burn has no block for, a 4-bit tensor on a
//! backend whose burn quantization holds 8 bits only. [`load_dequantized`] puts every tensor in
//! as float.
//!
//! One packed-weight type serves every path: [`PackedWeight`] (codes, scales, zero points and
//! their geometry, checked once when built), held by a [`MoqLinear`]'s [`MoqWeight`] or by a
//! [`QuantizedLinear`] (a layer built alone from an export), and handed as is to
//! [`crate::MoqBackend::quantized_matmul`]; both layers add their bias in one place
//! (`quantized_linear::packed_forward`). [`burn_quant`] converts codes to burn's own quantized
//! tensors.

pub mod burn_quant;
mod load;
mod moq_linear;
pub(crate) mod pending;
mod quantized_linear;
mod report;
mod weight;

pub use crate::backend::{Activations, Matmul, PackedWeight};
pub use burn_quant::{burn_scheme, to_burn_data};
pub use load::{Unservable, load_burn_quantized, load_codes, load_codes_with, load_dequantized};
pub use moq_linear::MoqLinear;
pub use quantized_linear::QuantizedLinear;
pub use report::{DeviceBytes, Held, LoadReport, LoadedTensor};
pub use weight::MoqWeight;

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
//! backend whose burn quantization holds 8 bits only.

mod load;
mod moq_linear;
pub(crate) mod pending;
mod report;
mod weight;

pub use crate::backend::Matmul;
pub(crate) use load::load_all_dequantized;
pub use load::{Unservable, load_burn_quantized, load_codes};
pub use moq_linear::MoqLinear;
pub use report::{DeviceBytes, Held, LoadReport, LoadedTensor};
pub use weight::MoqWeight;

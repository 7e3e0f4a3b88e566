//! [`MoqLinear`]: burn's `Linear` that can also serve an export's packed codes.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;

use super::MoqWeight;
use super::quantized_linear::packed_forward;
use crate::error::Result;

/// A linear layer `y = x · W + b` that trains exactly like burn's [`Linear`] (same
/// initialisation, parameters, paths and record: a `Linear` checkpoint loads into it, and
/// [`crate::Moq`] trains it unchanged) and, once [`super::load_codes`] has loaded an export into
/// the model, holds its weight as packed codes and multiplies through
/// [`crate::MoqBackend::quantized_matmul`]: `moq-kernels` on burn-wgpu and burn-cuda, the CPU
/// low-bit matmul on NdArray. Its forward needs only `B: Backend` (the matmul is chosen when
/// the codes are loaded), so the model's generic code keeps its bounds.
///
/// Swap the type of a field from `Linear<B>` to `MoqLinear<B>` and build it from the
/// `LinearConfig` as before:
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use moq_burn::MoqLinear;
/// let layer: MoqLinear<NdArray> = LinearConfig::new(8, 4).init(&Default::default()).into();
/// assert!(layer.weight.packed().is_none());
/// ```
#[derive(Module, Debug)]
pub struct MoqLinear<B: Backend> {
    /// `[d_input, d_output]`: a float parameter, or packed codes after [`super::load_codes`].
    pub weight: MoqWeight<B>,
    /// `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> From<Linear<B>> for MoqLinear<B> {
    fn from(l: Linear<B>) -> Self {
        Self {
            weight: MoqWeight::Float(l.weight),
            bias: l.bias,
        }
    }
}

impl<B: Backend> MoqLinear<B> {
    /// A fresh layer, initialised as `config.init(device)` initialises a `Linear`.
    pub fn new(config: &LinearConfig, device: &B::Device) -> Self {
        config.init(device).into()
    }

    /// `[d_input, d_output]`.
    pub fn dims(&self) -> [usize; 2] {
        match &self.weight {
            MoqWeight::Float(p) => p.lazy_shape().dims(),
            MoqWeight::Packed { weight, .. } => weight.dims(),
        }
    }
}

impl<B: Backend> MoqLinear<B> {
    /// `x · W + b` for `x` of shape `[..., d_input]`; an error names a mismatched input width
    /// of a packed layer.
    pub fn try_forward<const D: usize>(&self, x: Tensor<B, D>) -> Result<Tensor<B, D>> {
        match &self.weight {
            MoqWeight::Float(w) => Ok(linear(x, w.val(), self.bias.as_ref().map(|b| b.val()))),
            MoqWeight::Packed { weight, matmul, .. } => {
                packed_forward(x, weight, self.bias.as_ref(), *matmul)
            }
        }
    }

    /// `x · W + b` for `x` of shape `[..., d_input]`: burn's `Linear::forward` for a float
    /// weight (the same op, bit for bit), the low-bit matmul for packed codes.
    ///
    /// # Panics
    /// If `x`'s last dimension is not `d_input`, as burn's `Linear` does;
    /// [`Self::try_forward`] returns the error instead.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.try_forward(x)
            .unwrap_or_else(|e| panic!("MoqLinear: {e}"))
    }
}

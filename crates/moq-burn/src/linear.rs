//! [`QuantizedLinear`]: a linear layer that holds its weight as low-bit codes with per-group
//! scales (and zero points), built from a MoQ export, for inference.
//!
//! Its forward pass is the generic path for every backend: it dequantizes the weight with
//! tensor ops, then multiplies. The codes are stored as `i32` on the device, so this path saves
//! no device memory; the packed codes and the kernels that multiply with them directly
//! (`moq-kernels`) are what make low-bit inference small and fast, and will back this module on
//! the cubecl backends.

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use moq_core::QuantType;
use moq_core::export::Exported;

use crate::error::{MoqBurnError, Result};

/// A linear layer `y = x · dequant(W) + b` with `W` (`[d_input, d_output]`, burn's layout) held
/// as integer codes, one scale per group of its flattened values and, for asymmetric grids, one
/// zero point per group.
#[derive(Module, Debug)]
pub struct QuantizedLinear<B: Backend> {
    /// The codes, `[d_input, d_output]` (`q` for symmetric grids, `q − z` offset form for
    /// asymmetric ones: the value is `(codes − zero_points) · scale`).
    pub codes: Param<Tensor<B, 2, Int>>,
    /// One scale per group, `[groups]`.
    pub scales: Param<Tensor<B, 1>>,
    /// One zero point per group, `[groups]` (zeros for symmetric grids).
    pub zero_points: Param<Tensor<B, 1, Int>>,
    /// The bias, `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Bit width of the codes.
    pub bits: u32,
}

impl<B: Backend> QuantizedLinear<B> {
    /// Builds the layer from an exported weight (`[d_input, d_output]`) and its bias.
    pub fn from_export(
        weight: &Exported,
        bias: Option<&[f32]>,
        device: &B::Device,
    ) -> Result<Self> {
        let bad = |reason: String| MoqBurnError::Export {
            reason: format!("`{}`: {reason}", weight.name),
        };
        let &[d_input, d_output] = weight.shape.as_slice() else {
            return Err(bad(format!(
                "a linear weight is 2-d, this one has shape {:?}",
                weight.shape
            )));
        };
        let q = moq_core::unpack(&weight.packed)?;
        if q.bits == 2 && q.quant_type == QuantType::Symmetric || q.bits == 1 {
            // Ternary and binary grids are not `code · scale` per group.
            return Err(bad(format!(
                "{}-bit grids are not supported by QuantizedLinear yet",
                q.bits
            )));
        }
        if let Some(b) = bias.filter(|b| b.len() != d_output) {
            return Err(bad(format!(
                "bias has {} values for {d_output} outputs",
                b.len()
            )));
        }
        let zero_points = if q.zero_points.is_empty() {
            vec![0; q.groups]
        } else {
            q.zero_points.clone()
        };
        let groups = q.groups;
        Ok(Self {
            codes: Param::initialized(
                ParamId::new(),
                Tensor::from_data(TensorData::new(q.codes, [d_input, d_output]), device),
            ),
            scales: Param::from_data(TensorData::new(q.scales, [groups]), device)
                .set_require_grad(false),
            zero_points: Param::initialized(
                ParamId::new(),
                Tensor::from_data(TensorData::new(zero_points, [groups]), device),
            ),
            bias: bias.map(|b| Param::from_data(TensorData::new(b.to_vec(), [d_output]), device)),
            bits: q.bits,
        })
    }

    /// The dequantized weight, `[d_input, d_output]`.
    pub fn weight(&self) -> Tensor<B, 2> {
        let [d_input, d_output] = self.codes.val().dims();
        let [groups] = self.scales.val().dims();
        let per_group = d_input * d_output / groups;
        let codes = self.codes.val().reshape([groups, per_group]);
        let zero = self.zero_points.val().reshape([groups, 1]);
        let scale = self.scales.val().reshape([groups, 1]);
        ((codes - zero).float() * scale).reshape([d_input, d_output])
    }

    /// `x · dequant(W) + b` for `x` of shape `[..., d_input]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        burn::tensor::module::linear(x, self.weight(), self.bias.as_ref().map(|b| b.val()))
    }
}

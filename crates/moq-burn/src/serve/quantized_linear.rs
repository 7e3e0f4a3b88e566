//! [`QuantizedLinear`]: a linear layer built alone from an export, holding its weight as a
//! [`PackedWeight`], for code that assembles layers one by one; and [`packed_forward`], the one
//! place a packed layer (this one or a served [`super::MoqLinear`]) multiplies and adds its bias.
//!
//! A model served whole needs no such layer: [`super::load_codes`] puts the codes into the
//! model's own [`super::MoqLinear`] layers.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use moq_core::export::{Exported, MoqFile};

use crate::backend::{Matmul, MoqBackend, PackedWeight};
use crate::error::{MoqBurnError, Result};

/// A linear layer `y = x · dequant(W) + b` with `W` (`[d_input, d_output]`, burn's layout) held
/// as a [`PackedWeight`].
#[derive(Module, Debug)]
pub struct QuantizedLinear<B: Backend> {
    /// The packed weight, `[d_input, d_output]`.
    pub weight: PackedWeight<B>,
    /// The bias, `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> QuantizedLinear<B> {
    /// Builds the layer from an exported weight (`[d_input, d_output]`, either code layout) and
    /// its bias.
    pub fn from_export(
        weight: &Exported,
        bias: Option<&[f32]>,
        device: &B::Device,
    ) -> Result<Self> {
        let packed = PackedWeight::from_export(weight, device)?;
        let [_, d_output] = packed.dims();
        if let Some(b) = bias.filter(|b| b.len() != d_output) {
            return Err(MoqBurnError::Export {
                reason: format!(
                    "`{}`: bias has {} values for {d_output} outputs",
                    weight.name,
                    b.len()
                ),
            });
        }
        Ok(Self {
            weight: packed,
            bias: bias.map(|b| Param::from_data(TensorData::new(b.to_vec(), [d_output]), device)),
        })
    }

    /// The layer at module path `prefix` of an export: its quantized `{prefix}.weight` and its
    /// float `{prefix}.bias` if the file has one (`weight` and `bias` for an empty prefix: a
    /// model that is one `Linear`).
    pub fn load(file: &MoqFile, prefix: &str, device: &B::Device) -> Result<Self> {
        let path = |leaf: &str| match prefix {
            "" => leaf.to_string(),
            _ => format!("{prefix}.{leaf}"),
        };
        let name = path("weight");
        let weight = file
            .quantized
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| MoqBurnError::Export {
                reason: format!(
                    "the file has no quantized tensor `{name}` (quantized tensors: {})",
                    file.quantized
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let bias_name = path("bias");
        let bias = file
            .float
            .iter()
            .find(|(n, _, _)| *n == bias_name)
            .map(|(_, _, v)| v.as_slice());
        Self::from_export(weight, bias, device)
    }

    /// The dequantized weight, `[d_input, d_output]` (tensor ops; for inspection and tests).
    pub fn dequantized(&self) -> Tensor<B, 2> {
        self.weight.dequantize()
    }
}

impl<B: MoqBackend> QuantizedLinear<B> {
    /// `x · dequant(W) + b` for `x` of shape `[..., d_input]`; an error names a mismatched
    /// input width.
    pub fn try_forward<const D: usize>(&self, x: Tensor<B, D>) -> Result<Tensor<B, D>> {
        packed_forward(x, &self.weight, self.bias.as_ref(), B::quantized_matmul)
    }

    /// `x · dequant(W) + b` for `x` of shape `[..., d_input]`.
    ///
    /// # Panics
    /// If `x`'s last dimension is not `d_input`, as burn's `Linear` does; [`Self::try_forward`]
    /// returns the error instead.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.try_forward(x)
            .unwrap_or_else(|e| panic!("QuantizedLinear: {e}"))
    }
}

/// `x · dequant(W) + b` through `matmul`: the forward pass of every packed layer.
pub(crate) fn packed_forward<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &PackedWeight<B>,
    bias: Option<&Param<Tensor<B, 1>>>,
    matmul: Matmul<B>,
) -> Result<Tensor<B, D>> {
    let y = matmul(x.into_primitive().tensor(), weight)?;
    let y = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(y));
    Ok(match bias {
        Some(b) => y + b.val().unsqueeze(),
        None => y,
    })
}

//! [`QuantizedLinear`]: a linear layer that holds its weight as packed low-bit codes with
//! per-group scales (and zero points), built from a MoQ export, for inference.
//!
//! The codes stay packed on the device (`moq-core`'s `Packed32` layout: eight 4-bit or four
//! 8-bit codes per 32-bit word), so a 4-bit layer takes about an eighth of its f32 size. Its
//! forward pass is [`MoqBackend::quantized_matmul`]: on burn-wgpu and burn-cuda (`CubeBackend`
//! and the default `Fusion` wrapping) `moq-kernels`' low-bit matmul, which dequantizes in
//! registers; on other backends (NdArray, Autodiff) a generic path that dequantizes with tensor
//! ops and multiplies.
//!
//! burn's module types are fixed at compile time, so a trained model's `Linear` fields cannot
//! be swapped in place: write the inference twin of the model with `QuantizedLinear` fields and
//! build each with [`QuantizedLinear::load`] from the export, which carries the bits each layer
//! reached (layers may end at different widths).

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData, TensorPrimitive};
use moq_core::export::{Exported, MoqFile};
use moq_core::{CodeLayout, PackedScales, QuantType};

use crate::backend::{MoqBackend, PackedWeight, dequantize_packed};
use crate::error::{MoqBurnError, Result};

/// A linear layer `y = x · dequant(W) + b` with `W` (`[d_input, d_output]`, burn's layout) held
/// as packed codes, one scale per group of its flattened values and, for asymmetric grids, one
/// zero point per group.
#[derive(Module, Debug)]
pub struct QuantizedLinear<B: Backend> {
    /// The packed codes, `[d_input, words per row]`: each element holds the 32 bits of one
    /// `u32` word of `moq-core`'s `Packed32` layout.
    pub words: Param<Tensor<B, 2, Int>>,
    /// One scale per group, `[groups]`.
    pub scales: Param<Tensor<B, 1>>,
    /// One stored zero point per group, `[groups]` (zeros for symmetric grids).
    pub zero_points: Param<Tensor<B, 1, Int>>,
    /// The bias, `[d_output]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Bit width of the codes.
    pub bits: u32,
    /// Outputs (columns of `W`).
    pub d_output: usize,
    /// Whether the grid is asymmetric.
    pub asymmetric: bool,
}

impl<B: Backend> QuantizedLinear<B> {
    /// Builds the layer from an exported weight (`[d_input, d_output]`, either code layout) and
    /// its bias.
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
        let p = &weight.packed;
        p.check()?;
        if p.len != d_input * d_output || p.row_len != d_output {
            return Err(bad(format!(
                "codes for {} elements in rows of {}, the shape says {:?}",
                p.len, p.row_len, weight.shape
            )));
        }
        if let Some(b) = bias.filter(|b| b.len() != d_output) {
            return Err(bad(format!(
                "bias has {} values for {d_output} outputs",
                b.len()
            )));
        }
        let p = p.to_layout(CodeLayout::Packed32)?;
        let words: Vec<i32> = p
            .words()
            .unwrap_or_default()
            .iter()
            .map(|&w| w as i32)
            .collect();
        let words_per_row = words.len() / d_input.max(1);
        let scales: Vec<f32> = match &p.scales {
            PackedScales::F32(s) => s.clone(),
            PackedScales::F16(s) => s.iter().map(|v| v.to_f32()).collect(),
        };
        let groups = p.groups;
        let zero_points = if p.zero_points.is_empty() {
            vec![0; groups]
        } else {
            p.zero_points.clone()
        };
        Ok(Self {
            words: Param::initialized(
                ParamId::new(),
                Tensor::from_data(
                    TensorData::new(words, [d_input, words_per_row]),
                    (device, DType::I32),
                ),
            ),
            scales: Param::from_data(TensorData::new(scales, [groups]), device)
                .set_require_grad(false),
            zero_points: Param::initialized(
                ParamId::new(),
                Tensor::from_data(TensorData::new(zero_points, [groups]), (device, DType::I32)),
            ),
            bias: bias.map(|b| Param::from_data(TensorData::new(b.to_vec(), [d_output]), device)),
            bits: p.bits,
            d_output,
            asymmetric: p.quant_type == QuantType::Asymmetric,
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

    pub(crate) fn packed(&self) -> PackedWeight<B> {
        PackedWeight {
            words: self.words.val().into_primitive(),
            scales: self.scales.val().into_primitive().tensor(),
            zero_points: self.zero_points.val().into_primitive(),
            n: self.d_output,
            bits: self.bits,
            asymmetric: self.asymmetric,
        }
    }

    /// The dequantized weight, `[d_input, d_output]` (tensor ops; for inspection and tests). An
    /// error if the layer's public parts were changed into ones that do not fit together.
    pub fn weight(&self) -> Result<Tensor<B, 2>> {
        dequantize_packed(self.packed())
    }
}

impl<B: MoqBackend> QuantizedLinear<B> {
    /// `x · dequant(W) + b` for `x` of shape `[..., d_input]`; an error names a mismatched
    /// input width.
    pub fn try_forward<const D: usize>(&self, x: Tensor<B, D>) -> Result<Tensor<B, D>> {
        let y = B::quantized_matmul(x.into_primitive().tensor(), self.packed())?;
        let y = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(y));
        Ok(match &self.bias {
            Some(b) => y + b.val().unsqueeze(),
            None => y,
        })
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

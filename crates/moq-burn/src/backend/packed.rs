//! [`PackedWeight`]: the one packed-weight type of the inference path, from the loader to each
//! kernel (the guide's "One forward pass, file by file"). Its geometry is checked once, when it
//! is built; what multiplies with it reads that geometry and checks nothing again.

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, ElementConversion, Int, Shape, Tensor, TensorData, TensorPrimitive};
use moq_core::export::Exported;
use moq_core::{CodeLayout, MoqError, PackedScales, PackedShape, PackedTensor, QuantType};

use super::MoqBackend;
use super::int8::{self, Activations, Int8Layout};
use crate::error::{MoqBurnError, Result};

/// A low-bit matmul `x · dequant(W)`: [`super::MoqBackend::quantized_matmul`] of the backend
/// the codes were loaded on, as a served weight keeps it ([`crate::serve::MoqWeight`]).
pub type Matmul<B> = fn(FloatTensor<B>, &PackedWeight<B>) -> Result<FloatTensor<B>>;

/// A weight `W` `[k, n]` as packed codes in `moq-core`'s `Packed32` layout (eight 4-bit or four
/// 8-bit codes per 32-bit word), one scale per group of its flattened values and, for
/// asymmetric grids, one zero point per group, held in burn parameters on the device: what
/// [`super::MoqBackend::quantized_matmul`] multiplies with.
///
/// Built by [`Self::from_packed`] (an export's codes) or [`Self::from_parts`] (tensors already
/// on the device), both of which check the parts against one [`PackedShape`]; the parts are
/// not public, so a weight that exists fits together. Visitors and mappers see its three
/// parameters (`words`, `scales`, `zero_points`); its record is theirs, loaded into a weight of
/// the same geometry (burn loads a record into a module of the same structure).
#[derive(Module, Debug)]
pub struct PackedWeight<B: Backend> {
    /// The words, `[k, words per row]`: each element holds the 32 bits of one `u32` word (as an
    /// `i32`, or sign-extended in a wider int type).
    words: Param<Tensor<B, 2, Int>>,
    /// One scale per group, `[groups]`.
    scales: Param<Tensor<B, 1>>,
    /// One stored zero point per group, `[groups]` (zeros for symmetric grids).
    zero_points: Param<Tensor<B, 1, Int>>,
    /// The geometry: `k` rows of `n` codes, bits, grid, groups.
    shape: PackedShape,
    /// The codes in the int8-activation kernel's tiles, when asked for
    /// ([`Self::with_activations`]); not part of the record.
    #[module(skip)]
    int8: Option<Int8Layout>,
}

impl<B: Backend> PackedWeight<B> {
    /// An exported linear weight (`[d_input, d_output]`, either code layout) on `device`: its
    /// shape must be 2-d and agree with its codes, which [`Self::from_packed`] checks.
    pub fn from_export(weight: &Exported, device: &B::Device) -> Result<Self> {
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
        if p.len != d_input * d_output || p.row_len != d_output {
            return Err(bad(format!(
                "codes for {} elements in rows of {}, the shape says {:?}",
                p.len, p.row_len, weight.shape
            )));
        }
        Self::from_packed(p, device)
    }

    /// An export's packed codes (`[rows, row_len]`, either code layout; the `Int8` layout is
    /// repacked to `Packed32`) on `device`, checked ([`PackedTensor::check`]: a file read from
    /// disk is user input) against the kernels' widths.
    pub fn from_packed(p: &PackedTensor, device: &B::Device) -> Result<Self> {
        p.check()?;
        let shape = p.shape()?;
        shape.check_kernel()?;
        let p = p.to_layout(CodeLayout::Packed32)?;
        let words: Vec<i32> = p
            .words()
            .unwrap_or_default()
            .iter()
            .map(|&w| w as i32)
            .collect();
        let scales: Vec<f32> = match &p.scales {
            PackedScales::F32(s) => s.clone(),
            PackedScales::F16(s) => s.iter().map(|v| v.to_f32()).collect(),
        };
        let zero_points = match p.zero_points.is_empty() {
            true => vec![0; shape.groups],
            false => p.zero_points.clone(),
        };
        let words = TensorData::new(words, [shape.rows, shape.words_per_row()]);
        let zero_points = TensorData::new(zero_points, [shape.groups]);
        Ok(Self {
            words: Param::initialized(
                ParamId::new(),
                Tensor::from_data(words, (device, DType::I32)),
            ),
            scales: Param::from_data(TensorData::new(scales, [shape.groups]), device)
                .set_require_grad(false),
            zero_points: Param::initialized(
                ParamId::new(),
                Tensor::from_data(zero_points, (device, DType::I32)),
            ),
            shape,
            int8: None,
        })
    }

    /// A weight of geometry `shape` from its parts on the device: the words
    /// `[shape.rows, shape.words_per_row()]`, one scale and one zero point per group (zeros
    /// for a symmetric grid). An error names the part that does not fit.
    pub fn from_parts(
        words: Tensor<B, 2, Int>,
        scales: Tensor<B, 1>,
        zero_points: Tensor<B, 1, Int>,
        shape: PackedShape,
    ) -> Result<Self> {
        let bad = |reason: String| MoqBurnError::Core(MoqError::Packed { reason });
        shape.check_kernel()?;
        let [rows, words_per_row] = words.dims();
        if rows != shape.rows || words_per_row != shape.words_per_row() {
            return Err(bad(format!(
                "words of shape [{rows}, {words_per_row}] for a [{}, {}] weight of {} bits \
                 ([{}, {}] expected)",
                shape.rows,
                shape.row_len,
                shape.bits,
                shape.rows,
                shape.words_per_row()
            )));
        }
        let zeros = shape.zero_points();
        shape.check_parts(rows * words_per_row, scales.dims()[0], zeros)?;
        if zero_points.dims()[0] != shape.groups {
            return Err(bad(format!(
                "{} zero points for {} groups",
                zero_points.dims()[0],
                shape.groups
            )));
        }
        Ok(Self::from_checked(
            words.into_primitive(),
            scales.into_primitive().tensor(),
            zero_points.into_primitive(),
            shape,
        ))
    }

    /// The parts of a weight that was checked when first built (the fusion stream's copy of
    /// one; the parameters are new).
    pub(crate) fn from_checked(
        words: IntTensor<B>,
        scales: FloatTensor<B>,
        zero_points: IntTensor<B>,
        shape: PackedShape,
    ) -> Self {
        Self {
            words: Param::initialized(ParamId::new(), Tensor::from_primitive(words)),
            scales: Param::initialized(
                ParamId::new(),
                Tensor::from_primitive(TensorPrimitive::Float(scales)),
            )
            .set_require_grad(false),
            zero_points: Param::initialized(ParamId::new(), Tensor::from_primitive(zero_points)),
            shape,
            int8: None,
        }
    }

    /// The codes in the int8-activation kernel's tiles, if the weight was asked for them.
    pub fn int8(&self) -> Option<&Int8Layout> {
        self.int8.as_ref()
    }

    /// The activations the CPU matmul takes for this weight.
    pub fn activations(&self) -> Activations {
        match self.int8 {
            Some(_) => Activations::Int8,
            None => Activations::F32,
        }
    }

    /// The geometry, checked when the weight was built.
    pub fn shape(&self) -> PackedShape {
        self.shape
    }

    /// `[k, n]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.shape.rows, self.shape.row_len]
    }

    /// The words, `[k, words per row]`.
    pub fn words(&self) -> Tensor<B, 2, Int> {
        self.words.val()
    }

    /// The scales, `[groups]`.
    pub fn scales(&self) -> Tensor<B, 1> {
        self.scales.val()
    }

    /// The stored zero points, `[groups]` (zeros for a symmetric grid).
    pub fn zero_points(&self) -> Tensor<B, 1, Int> {
        self.zero_points.val()
    }

    /// The three parts as the backend's primitives: words, scales, zero points.
    pub fn primitives(&self) -> (IntTensor<B>, FloatTensor<B>, IntTensor<B>) {
        (
            self.words().into_primitive(),
            self.scales().into_primitive().tensor(),
            self.zero_points().into_primitive(),
        )
    }

    /// The device the codes are on.
    pub fn device(&self) -> B::Device {
        self.words.lazy_device()
    }

    /// `dequant(W)` `[k, n]` from tensor ops (shifts and masks on the words), on any backend.
    pub fn dequantize(&self) -> Tensor<B, 2> {
        let shape = self.shape;
        let (k, n, words_per_row) = (shape.rows, shape.row_len, shape.words_per_row());
        let (bits, per_word) = (shape.bits as i64, shape.codes_per_word());
        let words = self.words();
        let device = words.device();
        // Every int tensor here takes the words' dtype (i32 when built here, whatever the
        // backend's default int type is when loaded from a record).
        let dtype = words.dtype();
        let shifts = Tensor::<B, 1, Int>::arange(0..per_word as i64, (&device, dtype))
            .mul_scalar(bits)
            .reshape([1, 1, per_word])
            .expand([k, words_per_row, per_word]);
        let fields = words
            .reshape([k, words_per_row, 1])
            .expand([k, words_per_row, per_word])
            .bitwise_right_shift(shifts)
            .bitwise_and_scalar(((1i64 << bits) - 1).elem());
        let codes = if bits == 1 {
            fields.mul_scalar(2).sub_scalar(1)
        } else {
            let negative = fields
                .clone()
                .greater_equal_elem(1i64 << (bits - 1))
                .int()
                .cast(dtype);
            fields - negative.mul_scalar(1i64 << bits)
        };
        let groups = shape.groups;
        let codes = codes
            .reshape([k, words_per_row * per_word])
            .slice([0..k, 0..n])
            .reshape([groups, k * n / groups]);
        let codes = match shape.quant_type {
            QuantType::Asymmetric => codes - self.zero_points().cast(dtype).reshape([groups, 1]),
            QuantType::Symmetric => codes,
        };
        let scales = self.scales().reshape([groups, 1]);
        (codes.float() * scales).reshape([k, n])
    }
}

impl<B: MoqBackend> PackedWeight<B> {
    /// The weight with its activations taken as `activations` by the CPU matmul (`int8.rs`):
    /// for [`Activations::Int8`], on a backend that runs it
    /// ([`MoqBackend::int8_activations`]), the codes are repacked once into the int8 kernel's
    /// tiles (an error when its groups split a tile of 8 columns: groups of a multiple of 8
    /// along a row, or of whole rows, are needed); otherwise the weight keeps f32 activations.
    pub fn with_activations(self, activations: Activations) -> Result<Self> {
        if activations == Activations::F32 || !B::int8_activations() {
            return Ok(Self { int8: None, ..self });
        }
        let (words, scales, zero_points) = self.primitives();
        let layout = int8::layout::<B>(words, scales, zero_points, self.shape)?;
        Ok(Self {
            int8: Some(layout),
            ..self
        })
    }
}

/// `[..., n]` for an input `[..., k]`; an error naming the input when its last dimension is
/// not `k`.
pub(crate) fn matmul_output_shape(x: &[usize], k: usize, n: usize) -> Result<Shape> {
    if x.last().copied() != Some(k) {
        return Err(MoqBurnError::InputShape {
            what: format!("input of shape {x:?} to a quantized matmul"),
            expected: k,
            found: x.last().copied().unwrap_or(0),
        });
    }
    let mut out = x.to_vec();
    if let Some(last) = out.last_mut() {
        *last = n;
    }
    Ok(Shape::from(out))
}

/// The output shape for the kernels: [`matmul_output_shape`], and `x` and `y` within their
/// 32-bit indexing (a larger input would wrap an index silently).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) fn kernel_output_shape(x: &[usize], k: usize, n: usize) -> Result<Shape> {
    let out = matmul_output_shape(x, k, n)?;
    let rows = out.num_elements().checked_div(n).unwrap_or(0);
    moq_core::check_indexable("quantized matmul input", rows.saturating_mul(k))?;
    moq_core::check_indexable("quantized matmul output", out.num_elements())?;
    Ok(out)
}

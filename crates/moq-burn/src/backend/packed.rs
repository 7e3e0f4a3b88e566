//! The packed weight a quantized matmul multiplies with, its checks, and its dequantization
//! from tensor ops.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{ElementConversion, Int, Shape, Tensor, TensorMetadata, TensorPrimitive};
use moq_core::{MoqError, PackedShape, QuantType};

use crate::error::{MoqBurnError, Result};

/// A low-bit matmul `x · dequant(W)`: [`super::MoqBackend::quantized_matmul`] of the backend
/// the codes were loaded on, as a served weight keeps it ([`crate::serve::MoqWeight`]).
pub type Matmul<B> = fn(FloatTensor<B>, PackedWeight<B>) -> Result<FloatTensor<B>>;

/// A weight `W` `[k, n]` in `moq-core`'s `Packed32` layout, held in burn tensors: what
/// [`super::MoqBackend::quantized_matmul`] multiplies with.
#[derive(Debug)]
pub struct PackedWeight<B: Backend> {
    /// The words, `[k, ceil(n / (32 / bits))]`: each element holds the 32 bits of one `u32` word
    /// (as an `i32`, or sign-extended in a wider int type).
    pub words: IntTensor<B>,
    /// One scale per group, `[groups]`.
    pub scales: FloatTensor<B>,
    /// One stored zero point per group, `[groups]` (zeros for symmetric grids).
    pub zero_points: IntTensor<B>,
    /// Columns `n`.
    pub n: usize,
    /// Bit width of the codes, 1–8.
    pub bits: u32,
    /// Whether the grid is asymmetric (zero points are used).
    pub asymmetric: bool,
}

impl<B: Backend> Clone for PackedWeight<B> {
    fn clone(&self) -> Self {
        Self {
            words: self.words.clone(),
            scales: self.scales.clone(),
            zero_points: self.zero_points.clone(),
            n: self.n,
            bits: self.bits,
            asymmetric: self.asymmetric,
        }
    }
}

impl<B: Backend> PackedWeight<B> {
    /// The weight's geometry, checked against `n`, `bits`, the words' shape and the number of
    /// scales and zero points (one of each per group; zeros for symmetric grids).
    pub fn shape(&self) -> Result<PackedShape> {
        let bad = |reason: String| MoqBurnError::Core(MoqError::Packed { reason });
        let [k, words_per_row] = match self.words.shape().as_slice() {
            &[k, w] => [k, w],
            other => {
                return Err(bad(format!(
                    "words have shape {other:?}, expected [k, words]"
                )));
            }
        };
        let quant_type = if self.asymmetric {
            QuantType::Asymmetric
        } else {
            QuantType::Symmetric
        };
        let groups = self.scales.shape().num_elements();
        let shape = PackedShape::new([k, self.n], self.bits, quant_type, groups)?;
        shape.check_kernel()?;
        shape.check_parts(k * words_per_row, groups, shape.zero_points())?;
        let zero_points = self.zero_points.shape().num_elements();
        if zero_points != groups {
            return Err(bad(format!(
                "{zero_points} zero points for {groups} groups"
            )));
        }
        Ok(shape)
    }
}

/// `dequant(W)` `[k, n]` from tensor ops (shifts and masks on the words), on any backend.
pub fn dequantize_packed<B: Backend>(w: PackedWeight<B>) -> Result<Tensor<B, 2>> {
    let shape = w.shape()?;
    let (k, words_per_row, groups) = (shape.rows, shape.words_per_row(), shape.groups);
    let device = B::int_device(&w.words);
    let (bits, per_word) = (w.bits as i64, (32 / w.bits) as usize);
    let words = Tensor::<B, 2, Int>::from_primitive(w.words);
    // Every int tensor here takes the words' dtype (i32 from `QuantizedLinear`, whatever the
    // backend's default int type is).
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
    let codes = codes
        .reshape([k, words_per_row * per_word])
        .slice([0..k, 0..w.n])
        .reshape([groups, k * w.n / groups]);
    let zero = Tensor::<B, 1, Int>::from_primitive(w.zero_points)
        .cast(dtype)
        .reshape([groups, 1]);
    let codes = if w.asymmetric { codes - zero } else { codes };
    let scales =
        Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(w.scales)).reshape([groups, 1]);
    Ok((codes.float() * scales).reshape([k, w.n]))
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

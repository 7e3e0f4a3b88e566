//! NdArray, burn's CPU backend: fake quantization on the host (`moq-core`'s quantizer), and the
//! quantized matmul through `moq-core`'s CPU kernel ([`moq_core::matmul`]), which reads the
//! packed words, scales and zero points where the tensors hold them (no copy) and never builds
//! `dequant(W)`; a weight asked for int8 activations through [`moq_core::matmul::matmul_i8`]
//! on its tiles (`int8.rs`). Tensors in other dtypes (f64 activations, i64 words) take the
//! tensor-ops path.

use burn::backend::NdArray;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorData, TensorMetadata};
use moq_core::matmul::{INT8_MAX_ROWS, PackedMatrix, Scales, Word, matmul, matmul_i8};
use moq_core::{PackedShape, QuantSpec, QuantType};

use super::MoqBackend;
use super::host::{fake_quantize_on_host, on_slice};
use super::int8::Int8Layout;
use super::packed::{PackedWeight, matmul_output_shape};
use super::tensor_ops::quantized_matmul_tensor_ops;
use crate::error::Result;

impl<E, I, Q> MoqBackend for NdArray<E, I, Q>
where
    E: FloatNdArrayElement,
    I: IntNdArrayElement,
    Q: QuantElement,
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn burn_quantized_bits() -> &'static [u32] {
        &[8]
    }

    fn int8_activations() -> bool {
        true
    }

    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        // burn's `into_data` walks an array element by element through n-d indices when it is
        // shared (the wrapper keeps the master while quantizing it) or not in row order (a
        // transposed view); on MiniLM that walk was most of the wrapper's cost. A row-order
        // view is read as one slice instead, the same values through the same quantizer.
        if let NdArrayTensor::F32(array) = &tensor {
            let view = array.view();
            let rows = view.as_standard_layout();
            if let Some(values) = rows.as_slice() {
                let shape = Shape::from(view.shape().to_vec());
                return Ok(NdArrayTensor::from_data(on_slice(
                    values, shape, name, spec, mix_ratio,
                )?));
            }
        }
        fake_quantize_on_host::<Self>(tensor, name, spec, mix_ratio)
    }

    fn quantized_matmul(x: FloatTensor<Self>, w: &PackedWeight<Self>) -> Result<FloatTensor<Self>> {
        let shape = w.shape();
        let out_shape = matmul_output_shape(x.shape().as_slice(), shape.rows, shape.row_len)?;
        let (words, scales, zero_points) = w.primitives();
        if let Some(y) = int8_matmul(&x, &words, w.int8(), &out_shape)? {
            return Ok(NdArrayTensor::from_data(TensorData::new(y, out_shape)));
        }
        let parts = Parts {
            scales: &scales,
            zero_points: &zero_points,
            shape,
        };
        // The words as `PackedWeight::from_packed` makes them (i32), or as a record loaded with
        // the backend's default int type holds them (i64, twice the bytes to read).
        let y = match &words {
            NdArrayTensor::I32(words) => run(&x, words.view().as_slice(), parts, &out_shape)?,
            NdArrayTensor::I64(words) => run(&x, words.view().as_slice(), parts, &out_shape)?,
            _ => None,
        };
        let Some(y) = y else {
            return quantized_matmul_tensor_ops::<Self>(x, w);
        };
        Ok(NdArrayTensor::from_data(TensorData::new(y, out_shape)))
    }
}

/// `x · dequant(W)` with int8 activations, or `None` when the weight has no tiles, its tiles
/// were built from other words than it holds now, `x` is not f32, or `x` has more rows than
/// int8 activations pay for ([`INT8_MAX_ROWS`]): then the f32 path runs.
fn int8_matmul(
    x: &NdArrayTensor,
    words: &NdArrayTensor,
    int8: Option<&Int8Layout>,
    out_shape: &Shape,
) -> Result<Option<Vec<f32>>> {
    let Some(int8) = int8 else {
        return Ok(None);
    };
    let rows = out_shape.num_elements() / int8.tiles().shape()[1].max(1);
    if rows > INT8_MAX_ROWS {
        return Ok(None);
    }
    if !int8
        .words::<NdArrayTensor>()
        .is_some_and(|built| same_storage(built, words))
    {
        return Ok(None);
    }
    on_rows(x, out_shape, |xs, y| matmul_i8(xs, int8.tiles(), y))
}

/// `f(x, y)` on the values of `x` in row order (an f32 tensor; `None` for another dtype) into
/// a new output of `out_shape`.
fn on_rows(
    x: &NdArrayTensor,
    out_shape: &Shape,
    f: impl FnOnce(&[f32], &mut [f32]) -> moq_core::Result<()>,
) -> Result<Option<Vec<f32>>> {
    let NdArrayTensor::F32(xs) = x else {
        return Ok(None);
    };
    // Activations are small next to the weight: a strided view is copied in row order.
    let xs = xs.view();
    let xs = xs.as_standard_layout();
    let xs = xs
        .as_slice()
        .expect("a standard-layout array is contiguous");
    let mut y = vec![0.0f32; out_shape.num_elements()];
    f(xs, &mut y)?;
    Ok(Some(y))
}

/// Whether two int tensors are views of the same buffer with the same shape: the words a
/// weight's tiles were built from (whose reference the tiles hold, so the buffer is not reused).
fn same_storage(a: &NdArrayTensor, b: &NdArrayTensor) -> bool {
    place(a).is_some_and(|a| Some(a) == place(b))
}

/// An int tensor's place: its element width, first element's address, shape and strides.
fn place(t: &NdArrayTensor) -> Option<(usize, usize, Vec<usize>, Vec<isize>)> {
    let (v32, v64) = match t {
        NdArrayTensor::I32(a) => (Some(a.view()), None),
        NdArrayTensor::I64(a) => (None, Some(a.view())),
        _ => return None,
    };
    let at = |ptr: usize, shape: &[usize], strides: &[isize], width| {
        (width, ptr, shape.to_vec(), strides.to_vec())
    };
    v32.map(|v| at(v.as_ptr() as usize, v.shape(), v.strides(), 4))
        .or_else(|| v64.map(|v| at(v.as_ptr() as usize, v.shape(), v.strides(), 8)))
}

/// A weight's scales and zero points as NdArray holds them, and its geometry.
#[derive(Clone, Copy)]
struct Parts<'a> {
    scales: &'a NdArrayTensor,
    zero_points: &'a NdArrayTensor,
    shape: PackedShape,
}

/// The CPU kernel on the buffers in place, or `None` when a tensor is not in a dtype and layout
/// it reads (then the tensor-ops path runs).
fn run<W: Word>(
    x: &NdArrayTensor,
    words: Option<&[W]>,
    w: Parts<'_>,
    out_shape: &Shape,
) -> Result<Option<Vec<f32>>> {
    let (NdArrayTensor::F32(_), NdArrayTensor::F32(scales)) = (x, w.scales) else {
        return Ok(None);
    };
    let shape = w.shape;
    // Zero points (asymmetric grids only): read in place as i32, or narrowed from a record
    // loaded with 64-bit ints (one per group, small next to the words).
    let asymmetric = shape.quant_type == QuantType::Asymmetric;
    let in_place = match w.zero_points {
        NdArrayTensor::I32(z) => Some(z.view()),
        _ => None,
    };
    let narrowed: Vec<i32> = match w.zero_points {
        NdArrayTensor::I64(z) if asymmetric => z.view().iter().map(|&v| v as i32).collect(),
        NdArrayTensor::I32(_) | NdArrayTensor::I64(_) => Vec::new(),
        _ => return Ok(None),
    };
    let zero_points: &[i32] = match &in_place {
        _ if !asymmetric => &[],
        Some(z) => match z.as_slice() {
            Some(z) => z,
            None => return Ok(None),
        },
        None => &narrowed,
    };
    let scales = scales.view();
    let (Some(words), Some(scales)) = (words, scales.as_slice()) else {
        return Ok(None);
    };
    let matrix = PackedMatrix::new(shape, words, Scales::F32(scales), zero_points)?;
    on_rows(x, out_shape, |xs, y| matmul(xs, &matrix, y))
}

//! The device path from burn tensor ops: fake quantization and the quantized matmul for any
//! backend, with no kernel of its own (the tensors stay on the device; `Fusion` can fuse the
//! element-wise work).

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{ElementConversion, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use moq_core::{QuantSpec, QuantType, Rounding};

use super::host::fake_quantize_on_host;
use super::packed::{PackedWeight, matmul_output_shape};
use crate::error::Result;

/// The generic [`super::MoqBackend::quantized_matmul`]: [`PackedWeight::dequantize`], then a
/// matmul.
pub fn quantized_matmul_tensor_ops<B: Backend>(
    x: FloatTensor<B>,
    w: &PackedWeight<B>,
) -> Result<FloatTensor<B>> {
    let shape = x.shape();
    let [k, n] = w.dims();
    let out_shape = matmul_output_shape(shape.as_slice(), k, n)?;
    let weight = w.dequantize();
    let x = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(B::float_reshape(
        x,
        Shape::new([shape.num_elements() / k.max(1), k]),
    )));
    Ok(B::float_reshape(
        x.matmul(weight).into_primitive().tensor(),
        out_shape,
    ))
}

/// The generic implementation from tensor ops: the tensor stays on its device, and burn's
/// `Fusion` can fuse the element-wise work. Meant for GPU backends without kernels (moving every
/// weight to the host each step costs more than these ops there). One scalar is read per call
/// (the finiteness check); stochastic offsets come from `moq-core`'s generator on the host.
///
/// Results follow the formulas of docs/algorithm.md exactly, but not the reference's last-ulp
/// refinement: `moq-core` nudges each scale by a few ulps so that requantization is exact, this
/// path does not, so a value can differ from the reference by a few ulps, and an element sitting
/// on a rounding tie can land one grid step away.
pub fn fake_quantize_tensor_ops<B: Backend>(
    tensor: FloatTensor<B>,
    name: &str,
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<FloatTensor<B>> {
    let shape = tensor.shape();
    let numel = shape.num_elements();
    let group_len = spec.check(name, numel)?;
    if numel == 0 {
        return Ok(tensor);
    }
    let (groups, len) = (spec.groups, group_len);
    let x = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(B::float_reshape(
        tensor,
        Shape::new([groups, len]),
    )));
    // x·0 sums to NaN when any element is NaN or infinite; then let the reference name it.
    let check: f32 = x.clone().mul_scalar(0.0).sum().into_scalar().elem();
    if !check.is_finite() {
        let original = B::float_reshape(x.into_primitive().tensor(), shape);
        return fake_quantize_on_host::<B>(original, name, spec, mix_ratio);
    }
    let device = x.device();
    let offsets = (spec.rounding == Rounding::Stochastic).then(|| {
        let keys = spec.noise.keys();
        let r: Vec<f32> = (0..numel as u64).map(|i| keys.offset(i)).collect();
        Tensor::<B, 2>::from_data(TensorData::new(r, [groups, len]), &device)
    });
    let value = match (spec.bits, spec.quant_type) {
        (1, _) => binary(x.clone()),
        (2, _) => ternary(x.clone()),
        (bits, QuantType::Symmetric) => symmetric(x.clone(), bits, offsets.as_ref()),
        (bits, QuantType::Asymmetric) => asymmetric(x.clone(), bits, offsets.as_ref()),
    };
    let out = if mix_ratio == 0.0 {
        value
    } else {
        x.mul_scalar(mix_ratio) + value.mul_scalar(1.0 - mix_ratio)
    };
    Ok(B::float_reshape(out.into_primitive().tensor(), shape))
}

/// `round(x · inv (+ r))`: nearest, or stochastic with the offsets `r`.
fn round_scaled<B: Backend>(
    x: Tensor<B, 2>,
    inv: Tensor<B, 2>,
    offsets: Option<&Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let y = x * inv;
    match offsets {
        Some(r) => (y + r.clone()).round(),
        None => y.round(),
    }
}

/// `1 / s`, and 0 where `s` is 0.
fn recip_or_zero<B: Backend>(s: Tensor<B, 2>) -> Tensor<B, 2> {
    s.clone().recip().mask_fill(s.equal_elem(0.0), 0.0)
}

/// 1 bit per group row: `sign(x) · mean |x|`.
fn binary<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let alpha = x.clone().abs().mean_dim(1);
    let sign = x
        .greater_equal_elem(0.0)
        .float()
        .mul_scalar(2.0)
        .sub_scalar(1.0);
    sign * alpha
}

/// 2 bits (ternary): `sign(x) · α` past the threshold `0.7 · mean |x|`, α the mean |x| there.
fn ternary<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let [groups, len] = x.dims();
    let a = x.clone().abs();
    let threshold = a.clone().mean_dim(1).mul_scalar(0.7).expand([groups, len]);
    let past = a.clone().greater(threshold).float();
    let count = past.clone().sum_dim(1);
    let alpha = (a * past.clone()).sum_dim(1) / count.clamp_min(1.0);
    x.sign() * past * alpha
}

/// The symmetric linear grid of `bits`.
fn symmetric<B: Backend>(
    x: Tensor<B, 2>,
    bits: u32,
    offsets: Option<&Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let qmax = ((1u32 << (bits - 1)) - 1) as f32;
    let (min, max) = (x.clone().min_dim(1), x.clone().max_dim(1));
    let m = min.clone().abs().max_pair(max.clone().abs());
    // All values equal: code ±1 with scale |x| reproduces them exactly.
    let s = m.clone().div_scalar(qmax).mask_where(min.equal(max), m);
    let q = round_scaled(x, recip_or_zero(s.clone()), offsets).clamp(-qmax, qmax);
    q * s
}

/// The asymmetric linear grid of `bits` (zero points within the quantizer's ±2³⁰).
fn asymmetric<B: Backend>(
    x: Tensor<B, 2>,
    bits: u32,
    offsets: Option<&Tensor<B, 2>>,
) -> Tensor<B, 2> {
    let n = ((1u64 << bits) - 1) as f32;
    let limit = (1u32 << 30) as f32;
    let (min, max) = (x.clone().min_dim(1), x.clone().max_dim(1));
    let equal = min.clone().equal(max.clone());
    let s = (max - min.clone())
        .div_scalar(n)
        .mask_where(equal.clone(), min.clone().abs());
    let z = (min.clone().neg() / s.clone())
        .round()
        .clamp(-limit, limit)
        .mask_where(equal, min.lower_elem(0.0).float());
    let q = (round_scaled(x, recip_or_zero(s.clone()), offsets) + z.clone()).clamp(0.0, n);
    (q - z) * s
}

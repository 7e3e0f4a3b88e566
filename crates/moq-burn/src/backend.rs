//! The backend extension: MoQ's tensor operations as a trait on burn's `Backend`.
//!
//! Two generic implementations serve every backend:
//! - [`fake_quantize_on_host`] runs `moq-core`'s quantizer (vectorised, multi-threaded) on the
//!   tensor's host data: on a CPU backend that *is* the fastest path, and it is bit-identical to
//!   the reference by construction. `NdArray` uses it.
//! - [`fake_quantize_tensor_ops`] is built from burn tensor ops and stays on the device (and
//!   `Fusion` can fuse it): for a backend with neither kernels nor a fast host path.
//!
//! burn's cubecl backends (`CubeBackend`: burn-wgpu and burn-cuda, features `wgpu`/`cuda`) run
//! `moq-kernels`. On `Fusion<B>`, the wrapping users hold by default, both operations enter the
//! fusion stream as custom operations (not fused with their neighbours):
//! - fake quantization drains the stream up to its tensor and runs `B`'s kernel at once, since
//!   its result says whether the tensor held a NaN (once per weight per optimizer step);
//! - the low-bit matmul is lazy: its shapes are checked when it is called, and it runs when the
//!   stream does, like any burn op (the inference path).
//!
//! `Autodiff<B>` adds a straight-through backward: the gradient passes through unchanged. Any
//! other backend implements [`MoqBackend`] in three lines by calling one of the two paths.
//! The trait works on primitives (`FloatTensor<Self>`), as burn's own ops do, so a kernel
//! implementation needs no conversion.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{
    DType, ElementConversion, Int, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive,
    try_read_sync,
};
use half::{bf16, f16};
use moq_core::{Element, QuantSpec, QuantType, Rounding, fake_quantize_mixed};
use moq_kernels::KernelError;

use crate::error::{MoqBurnError, Result};

/// A burn backend that can run MoQ's quantization operations.
pub trait MoqBackend: Backend {
    /// Fake-quantizes `tensor` group-wise over its flat row-major storage and blends:
    /// `ρ·x + (1−ρ)·Q(x)` with `ρ = mix_ratio` (0 gives plain fake quantization). `name`
    /// identifies the tensor in errors (a group count that does not divide it, NaN or Inf).
    /// The result has the input's shape and dtype.
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>>;

    /// `x · dequant(W)` for `x` of shape `[..., k]` and a packed weight `W` `[k, n]`; returns
    /// `[..., n]`. The default is [`quantized_matmul_tensor_ops`] (dequantize with tensor ops,
    /// then multiply); burn's cubecl backends run `moq-kernels`' low-bit matmul, which never
    /// materialises `dequant(W)`.
    fn quantized_matmul(x: FloatTensor<Self>, w: PackedWeight<Self>) -> Result<FloatTensor<Self>> {
        quantized_matmul_tensor_ops::<Self>(x, w)
    }
}

/// A weight `W` `[k, n]` in `moq-core`'s `Packed32` layout, held in burn tensors: what
/// [`MoqBackend::quantized_matmul`] multiplies with.
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
    /// `[k, words per row]`, checked against `n`, `bits` and the scales and zero points.
    fn check(&self) -> Result<[usize; 2]> {
        let bad = |reason: String| Err(MoqBurnError::Kernel(KernelError::Layout { reason }));
        let [k, words_per_row] = match self.words.shape().as_slice() {
            &[k, w] => [k, w],
            other => return bad(format!("words have shape {other:?}, expected [k, words]")),
        };
        if !(1..=8).contains(&self.bits) {
            return bad(format!("{} bits (packed codes hold 1 to 8)", self.bits));
        }
        let per_word = 32 / self.bits as usize;
        if words_per_row != self.n.div_ceil(per_word) {
            return bad(format!(
                "{words_per_row} words per row cannot hold {} columns of {} bits",
                self.n, self.bits
            ));
        }
        let groups = self.scales.shape().num_elements();
        if groups == 0 || !(k * self.n).is_multiple_of(groups) {
            return bad(format!(
                "{groups} scales for a [{k}, {}] weight (groups must divide it)",
                self.n
            ));
        }
        if self.zero_points.shape().num_elements() != groups {
            return bad(format!(
                "{} zero points for {groups} groups",
                self.zero_points.shape().num_elements()
            ));
        }
        Ok([k, words_per_row])
    }
}

/// `dequant(W)` `[k, n]` from tensor ops (shifts and masks on the words), on any backend.
pub fn dequantize_packed<B: Backend>(w: PackedWeight<B>) -> Result<Tensor<B, 2>> {
    let [k, words_per_row] = w.check()?;
    let groups = w.scales.shape().num_elements();
    let device = B::int_device(&w.words);
    let (bits, per_word) = (w.bits as i64, (32 / w.bits) as usize);
    let words = Tensor::<B, 2, Int>::from_primitive(w.words);
    let shifts = Tensor::<B, 1, Int>::arange(0..per_word as i64, &device)
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
        let negative = fields.clone().greater_equal_elem(1i64 << (bits - 1)).int();
        fields - negative.mul_scalar(1i64 << bits)
    };
    let codes = codes
        .reshape([k, words_per_row * per_word])
        .slice([0..k, 0..w.n])
        .reshape([groups, k * w.n / groups]);
    let zero = Tensor::<B, 1, Int>::from_primitive(w.zero_points).reshape([groups, 1]);
    let codes = if w.asymmetric { codes - zero } else { codes };
    let scales =
        Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(w.scales)).reshape([groups, 1]);
    Ok((codes.float() * scales).reshape([k, w.n]))
}

/// The generic [`MoqBackend::quantized_matmul`]: [`dequantize_packed`], then a matmul.
pub fn quantized_matmul_tensor_ops<B: Backend>(
    x: FloatTensor<B>,
    w: PackedWeight<B>,
) -> Result<FloatTensor<B>> {
    let shape = x.shape();
    let [k, _] = w.check()?;
    let out_shape = matmul_output_shape(shape.as_slice(), k, w.n)?;
    let weight = dequantize_packed(w)?;
    let x = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(B::float_reshape(
        x,
        Shape::new([shape.num_elements() / k.max(1), k]),
    )));
    Ok(B::float_reshape(
        x.matmul(weight).into_primitive().tensor(),
        out_shape,
    ))
}

fn shape_mismatch(x: &[usize], k: usize) -> MoqBurnError {
    MoqBurnError::Kernel(KernelError::Shape {
        what: format!("input of shape {x:?} to a quantized matmul with {k} input features"),
        expected: k,
        found: x.last().copied().unwrap_or(0),
    })
}

/// [`MoqBackend::fake_quantize`] on a `Tensor`.
pub fn fake_quantize<B: MoqBackend, const D: usize>(
    tensor: Tensor<B, D>,
    name: &str,
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<Tensor<B, D>> {
    let primitive = tensor.into_primitive().tensor();
    Ok(Tensor::from_primitive(TensorPrimitive::Float(
        B::fake_quantize(primitive, name, spec, mix_ratio)?,
    )))
}

/// The generic implementation: reads the tensor to the host, runs `moq-core`, and writes the
/// result back to the tensor's device in its dtype (f32, f16, bf16; f64 through f32).
pub fn fake_quantize_on_host<B: Backend>(
    tensor: FloatTensor<B>,
    name: &str,
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<FloatTensor<B>> {
    let device = B::float_device(&tensor);
    let read_error = |message: String| MoqBurnError::Read {
        tensor: name.to_string(),
        message,
    };
    let data = try_read_sync(B::float_into_data(tensor))
        .ok_or_else(|| read_error("this platform cannot read tensors synchronously".into()))?
        .map_err(|e| read_error(format!("{e:?}")))?;
    let out = match data.dtype {
        DType::F32 => on_slice::<f32>(&data, name, spec, mix_ratio)?,
        DType::F16 => on_slice::<f16>(&data, name, spec, mix_ratio)?,
        DType::BF16 => on_slice::<bf16>(&data, name, spec, mix_ratio)?,
        DType::F64 => {
            let wide = data.clone().convert::<f32>();
            on_slice::<f32>(&wide, name, spec, mix_ratio)?.convert::<f64>()
        }
        other => {
            return Err(MoqBurnError::Read {
                tensor: name.to_string(),
                message: format!("dtype {other:?} is not a float"),
            });
        }
    };
    Ok(B::float_from_data(out, &device))
}

fn on_slice<T: Element + burn::tensor::Element>(
    data: &TensorData,
    name: &str,
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<TensorData> {
    let input = data.as_slice::<T>().map_err(|e| MoqBurnError::Read {
        tensor: name.to_string(),
        message: format!("{e:?}"),
    })?;
    let mut output = input.to_vec();
    fake_quantize_mixed(name, input, &mut output, spec, mix_ratio)?;
    Ok(TensorData::new(output, data.shape.clone()))
}

/// The generic implementation from tensor ops: the tensor stays on its device, and burn's
/// `Fusion` can fuse the element-wise work. Meant for GPU backends without kernels (moving every
/// weight to the host each step costs more than these ops there). One scalar is read per call
/// (the finiteness check); stochastic offsets come from `moq-core`'s generator on the host.
///
/// Results follow the formulas of DESIGN.md section 3 exactly, but not the reference's last-ulp
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
    let scaled = |x: Tensor<B, 2>, inv: Tensor<B, 2>| {
        let y = x * inv;
        match &offsets {
            Some(r) => (y + r.clone()).round(),
            None => y.round(),
        }
    };
    let recip_or_zero = |s: Tensor<B, 2>| s.clone().recip().mask_fill(s.equal_elem(0.0), 0.0);
    let value = match (spec.bits, spec.quant_type) {
        (1, _) => {
            let alpha = x.clone().abs().mean_dim(1);
            let sign = x
                .clone()
                .greater_equal_elem(0.0)
                .float()
                .mul_scalar(2.0)
                .sub_scalar(1.0);
            sign * alpha
        }
        (2, _) => {
            let a = x.clone().abs();
            let threshold = a.clone().mean_dim(1).mul_scalar(0.7).expand([groups, len]);
            let past = a.clone().greater(threshold).float();
            let count = past.clone().sum_dim(1);
            let alpha = (a * past.clone()).sum_dim(1) / count.clamp_min(1.0);
            x.clone().sign() * past * alpha
        }
        (bits, QuantType::Symmetric) => {
            let qmax = ((1u32 << (bits - 1)) - 1) as f32;
            let (min, max) = (x.clone().min_dim(1), x.clone().max_dim(1));
            let m = min.clone().abs().max_pair(max.clone().abs());
            // All values equal: code ±1 with scale |x| reproduces them exactly.
            let s = m.clone().div_scalar(qmax).mask_where(min.equal(max), m);
            let q = scaled(x.clone(), recip_or_zero(s.clone())).clamp(-qmax, qmax);
            q * s
        }
        (bits, QuantType::Asymmetric) => {
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
            let q = (scaled(x.clone(), recip_or_zero(s.clone())) + z.clone()).clamp(0.0, n);
            (q - z) * s
        }
    };
    let out = if mix_ratio == 0.0 {
        value
    } else {
        x.mul_scalar(mix_ratio) + value.mul_scalar(1.0 - mix_ratio)
    };
    Ok(B::float_reshape(out.into_primitive().tensor(), shape))
}

#[cfg(feature = "ndarray")]
impl<E, I, Q> MoqBackend for burn::backend::NdArray<E, I, Q>
where
    E: burn::backend::ndarray::FloatNdArrayElement,
    I: burn::backend::ndarray::IntNdArrayElement,
    Q: burn::backend::ndarray::QuantElement,
    burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<E>>,
    burn::backend::ndarray::NdArrayTensor: From<burn::backend::ndarray::SharedArray<I>>,
{
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        fake_quantize_on_host::<Self>(tensor, name, spec, mix_ratio)
    }
}

/// Straight-through estimator: the backward pass of fake quantization is the identity, so the
/// gradient at the quantized weights reaches the full-precision ones unchanged.
#[derive(Debug)]
struct StraightThrough;

impl<B: Backend> Backward<B, 1> for StraightThrough {
    type State = ();

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        unary::<B, _>(ops.parents, ops.node, grads, |grad| grad);
    }
}

impl<B: MoqBackend, C: CheckpointStrategy> MoqBackend for Autodiff<B, C> {
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        let output = B::fake_quantize(tensor.primitive.clone(), name, spec, mix_ratio)?;
        Ok(StraightThrough
            .prepare::<C>([tensor.node.clone()])
            .compute_bound()
            .stateless(output))
    }
}

/// burn's cubecl backends (burn-wgpu, burn-cuda): `moq-kernels`' fused kernel, one per tensor
/// (a per-group reduction, then one pass over the tensor), on the device. f32, f16 and bf16
/// tensors; other dtypes take the tensor-ops path. A NaN or infinity is then located by the
/// host reference, so the error names the element, as on every backend.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl<R, F, I, BT> MoqBackend for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        use moq_kernels::fake_quantize as kernel;
        let tensor = burn_cubecl::kernel::into_contiguous(tensor);
        let shape = tensor.shape();
        let len = shape.num_elements();
        let (client, handle) = (&tensor.client, &tensor.handle);
        let out = match tensor.dtype {
            DType::F32 => kernel::<R, f32>(client, handle, len, name, spec, mix_ratio),
            DType::F16 => kernel::<R, f16>(client, handle, len, name, spec, mix_ratio),
            DType::BF16 => kernel::<R, bf16>(client, handle, len, name, spec, mix_ratio),
            _ => return fake_quantize_tensor_ops::<Self>(tensor, name, spec, mix_ratio),
        };
        match out {
            Ok(out) => Ok(burn_cubecl::tensor::CubeTensor::new_contiguous(
                tensor.client.clone(),
                tensor.device.clone(),
                shape,
                out,
                tensor.dtype,
            )),
            Err(KernelError::NonFinite { .. }) => {
                fake_quantize_on_host::<Self>(tensor, name, spec, mix_ratio)
            }
            Err(KernelError::Spec(e)) => Err(e.into()),
            Err(e) => Err(MoqBurnError::Kernel(e)),
        }
    }

    fn quantized_matmul(x: FloatTensor<Self>, w: PackedWeight<Self>) -> Result<FloatTensor<Self>> {
        use burn_cubecl::kernel::into_contiguous;
        use moq_core::ScaleFormat;
        let [k, _] = w.check()?;
        let x = into_contiguous(x);
        let shape = x.shape();
        let out_shape = matmul_output_shape(shape.as_slice(), k, w.n)?;
        let scale_format = match w.scales.dtype {
            DType::F32 => ScaleFormat::F32,
            DType::F16 => ScaleFormat::F16,
            _ => return quantized_matmul_tensor_ops::<Self>(x, w),
        };
        let four_bytes =
            |t: &burn_cubecl::tensor::CubeTensor<R>| matches!(t.dtype, DType::I32 | DType::U32);
        if !four_bytes(&w.words)
            || !four_bytes(&w.zero_points)
            || !matches!(x.dtype, DType::F32 | DType::F16)
        {
            return quantized_matmul_tensor_ops::<Self>(x, w);
        }
        let (words, scales, zero_points) = (
            into_contiguous(w.words),
            into_contiguous(w.scales),
            into_contiguous(w.zero_points),
        );
        let groups = scales.shape().num_elements();
        let weights = moq_kernels::DeviceWeights::from_parts(
            words.handle.clone(),
            scales.handle.clone(),
            zero_points.handle.clone(),
            [k, w.n],
            w.bits,
            if w.asymmetric {
                QuantType::Asymmetric
            } else {
                QuantType::Symmetric
            },
            groups,
            scale_format,
        )?;
        let rows = shape.num_elements() / k.max(1);
        let y = match x.dtype {
            DType::F32 => moq_kernels::matmul::<R, f32>(&x.client, &x.handle, rows, &weights)?,
            _ => moq_kernels::matmul::<R, f16>(&x.client, &x.handle, rows, &weights)?,
        };
        Ok(burn_cubecl::tensor::CubeTensor::new_contiguous(
            x.client.clone(),
            x.device.clone(),
            out_shape,
            y,
            x.dtype,
        ))
    }
}

/// `Fusion<B>`, which is what `burn::backend::Wgpu` and `Cuda` are with default features: the
/// fusion stream is drained up to the tensor, `B`'s kernel runs on its primitive (so errors are
/// returned at once), and the result enters the stream as a custom operation that registers it.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl<B: burn_fusion::FusionBackend + MoqBackend> MoqBackend for burn_fusion::Fusion<B> {
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        let client = tensor.client.clone();
        let inner = client.resolve_tensor_float::<B>(tensor.clone());
        let output = B::fake_quantize(inner, name, spec, mix_ratio)?;
        Ok(fusion::computed::<B>(
            "moq_fake_quantize",
            vec![tensor],
            output,
        ))
    }

    /// Lazy: the shapes are checked now (everything `B`'s matmul could refuse), and the matmul
    /// enters the fusion stream as a custom operation, run when the stream runs; no drain.
    fn quantized_matmul(x: FloatTensor<Self>, w: PackedWeight<Self>) -> Result<FloatTensor<Self>> {
        let [k, _] = w.check()?;
        let shape = x.shape();
        let out_shape = matmul_output_shape(shape.as_slice(), k, w.n)?;
        Ok(fusion::quantized_matmul::<B>(x, w, out_shape))
    }
}

/// `[..., n]` for an input `[..., k]`; an error when the input's last dimension is not `k` or
/// the product is larger than the kernels index (32-bit).
fn matmul_output_shape(x: &[usize], k: usize, n: usize) -> Result<Shape> {
    if x.last().copied() != Some(k) {
        return Err(shape_mismatch(x, k));
    }
    let rows: usize = x[..x.len() - 1].iter().product();
    let max = moq_kernels::quant::MAX_LEN;
    if rows.saturating_mul(k.max(n)) > max {
        return Err(MoqBurnError::Kernel(KernelError::TooLarge {
            tensor: "quantized matmul input".into(),
            len: rows.saturating_mul(k.max(n)),
            max,
        }));
    }
    let mut out = x.to_vec();
    if let Some(last) = out.last_mut() {
        *last = n;
    }
    Ok(Shape::from(out))
}

/// MoQ's operations in a `Fusion<B>` stream, as custom operations.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod fusion {
    use std::marker::PhantomData;

    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{Shape, TensorMetadata};
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

    use super::{MoqBackend, PackedWeight};

    /// `B::quantized_matmul` run when the stream runs.
    #[derive(Clone, Debug)]
    struct QuantizedMatmul<B> {
        desc: CustomOpIr,
        n: usize,
        bits: u32,
        asymmetric: bool,
        _backend: PhantomData<B>,
    }

    impl<B: FusionBackend + MoqBackend> Operation<B::FusionRuntime> for QuantizedMatmul<B> {
        fn execute(
            &self,
            handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
        ) {
            let ([x, words, scales, zero_points], [out]) = self.desc.as_fixed();
            let w = PackedWeight::<B> {
                words: handles.get_int_tensor::<B>(words),
                scales: handles.get_float_tensor::<B>(scales),
                zero_points: handles.get_int_tensor::<B>(zero_points),
                n: self.n,
                bits: self.bits,
                asymmetric: self.asymmetric,
            };
            // Every error `B` could return was checked when the operation was registered.
            let y = B::quantized_matmul(handles.get_float_tensor::<B>(x), w)
                .expect("quantized matmul shapes were checked when it was registered");
            handles.register_float_tensor::<B>(&out.id, y);
        }
    }

    /// `x · dequant(w)` as an operation of the stream (shapes already checked).
    pub(super) fn quantized_matmul<B: FusionBackend + MoqBackend>(
        x: FloatTensor<Fusion<B>>,
        w: PackedWeight<Fusion<B>>,
        out_shape: Shape,
    ) -> FloatTensor<Fusion<B>> {
        let client = x.client.clone();
        let inputs = [x, w.words, w.scales, w.zero_points];
        let streams = OperationStreams::with_inputs(&inputs);
        let out = TensorIr::uninit(client.create_empty_handle(), out_shape, inputs[0].dtype());
        let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
        let desc = CustomOpIr::new("moq_quantized_matmul", &inputs, &[out]);
        let op = QuantizedMatmul::<B> {
            desc: desc.clone(),
            n: w.n,
            bits: w.bits,
            asymmetric: w.asymmetric,
            _backend: PhantomData,
        };
        client
            .register(streams, OperationIr::Custom(desc), op)
            .remove(0)
    }

    /// A custom operation whose output is already computed: executing it registers the output.
    #[derive(Clone, Debug)]
    struct Computed<B: FusionBackend> {
        desc: CustomOpIr,
        output: FloatTensor<B>,
    }

    impl<B: FusionBackend> Operation<B::FusionRuntime> for Computed<B> {
        fn execute(
            &self,
            handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
        ) {
            let out = &self.desc.outputs[0];
            handles.register_float_tensor::<B>(&out.id, self.output.clone());
        }
    }

    /// `output` (computed from the resolved `inputs`) as a tensor of the inputs' stream, after
    /// them. The inputs are consumed as by any operation.
    pub(super) fn computed<B: FusionBackend>(
        id: &'static str,
        inputs: Vec<FusionTensor<B::FusionRuntime>>,
        output: FloatTensor<B>,
    ) -> FloatTensor<Fusion<B>> {
        let client = inputs[0].client.clone();
        let streams = OperationStreams::with_inputs(&inputs);
        let out = TensorIr::uninit(client.create_empty_handle(), output.shape(), output.dtype());
        let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
        let desc = CustomOpIr::new(id, &inputs, &[out]);
        client
            .register(
                streams,
                OperationIr::Custom(desc.clone()),
                Computed::<B> { desc, output },
            )
            .remove(0)
    }
}

//! The backend extension: MoQ's tensor operations as a trait on burn's `Backend`.
//!
//! [`MoqBackend`] is implemented
//! - for `NdArray` by the generic path [`fake_quantize_on_host`], which runs `moq-core`'s
//!   quantizer (vectorised, multi-threaded) on the tensor's host data: on a CPU backend that *is*
//!   the fastest implementation, and it is bit-identical to the reference by construction;
//! - for `Autodiff<B>` with a straight-through backward: the gradient passes through unchanged.
//!
//! The cubecl backends (burn-wgpu, burn-cuda, and their default `Fusion` wrapping) will get
//! implementations that launch `moq-kernels`; until then a backend without its own
//! implementation can use [`fake_quantize_on_host`] in a three-line impl, as `NdArray` does.
//! The trait works on primitives (`FloatTensor<Self>`), as burn's own ops do, so a kernel
//! implementation needs no conversion.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, try_read_sync};
use half::{bf16, f16};
use moq_core::{Element, QuantSpec, fake_quantize_mixed};

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

/// burn's cubecl backends (burn-wgpu, burn-cuda) through the generic path, until `moq-kernels`
/// provides fused kernels for them.
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
        fake_quantize_on_host::<Self>(tensor, name, spec, mix_ratio)
    }
}

/// `Fusion<B>`, which is what `burn::backend::Wgpu` and `Cuda` are with default features:
/// reading the tensor flushes the fusion stream, then the generic path runs.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl<B: burn_fusion::FusionBackend + MoqBackend> MoqBackend for burn_fusion::Fusion<B> {
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        fake_quantize_on_host::<Self>(tensor, name, spec, mix_ratio)
    }
}

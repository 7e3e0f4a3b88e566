//! `Fusion<B>` (what `burn::backend::Wgpu` and `Cuda` are with default features): MoQ's
//! operations enter the fusion stream as custom operations.

use std::marker::PhantomData;

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use moq_core::{PackedShape, QuantSpec};

use super::MoqBackend;
use super::packed::{PackedWeight, kernel_output_shape};
use crate::error::Result;

/// `Fusion<B>`, which is what `burn::backend::Wgpu` and `Cuda` are with default features: the
/// fusion stream is drained up to the tensor, `B`'s kernel runs on its primitive (so errors are
/// returned at once), and the result enters the stream as a custom operation that registers it.
impl<B: FusionBackend + MoqBackend> MoqBackend for Fusion<B> {
    fn burn_quantized_bits() -> &'static [u32] {
        B::burn_quantized_bits()
    }

    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        let client = tensor.client.clone();
        let inner = client.resolve_tensor_float::<B>(tensor.clone());
        let output = B::fake_quantize(inner, name, spec, mix_ratio)?;
        Ok(computed::<B>("moq_fake_quantize", vec![tensor], output))
    }

    /// Lazy: the shapes are checked now (everything `B`'s matmul could refuse), and the matmul
    /// enters the fusion stream as a custom operation, run when the stream runs; no drain.
    fn quantized_matmul(x: FloatTensor<Self>, w: &PackedWeight<Self>) -> Result<FloatTensor<Self>> {
        let [k, n] = w.dims();
        let shape = x.shape();
        let out_shape = kernel_output_shape(shape.as_slice(), k, n)?;
        Ok(lazy_quantized_matmul::<B>(x, w, out_shape))
    }
}

/// `B::quantized_matmul` run when the stream runs.
#[derive(Clone, Debug)]
struct QuantizedMatmul<B> {
    desc: CustomOpIr,
    shape: PackedShape,
    _backend: PhantomData<B>,
}

impl<B: FusionBackend + MoqBackend> Operation<B::FusionRuntime> for QuantizedMatmul<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let ([x, words, scales, zero_points], [out]) = self.desc.as_fixed();
        // The weight registered was checked when built; its tensors come back from the stream.
        let w = PackedWeight::<B>::from_checked(
            handles.get_int_tensor::<B>(words),
            handles.get_float_tensor::<B>(scales),
            handles.get_int_tensor::<B>(zero_points),
            self.shape,
        );
        // Every error `B` could return was checked when the operation was registered.
        let y = B::quantized_matmul(handles.get_float_tensor::<B>(x), &w)
            .expect("quantized matmul shapes were checked when it was registered");
        handles.register_float_tensor::<B>(&out.id, y);
    }
}

/// `x · dequant(w)` as an operation of the stream (shapes already checked).
fn lazy_quantized_matmul<B: FusionBackend + MoqBackend>(
    x: FloatTensor<Fusion<B>>,
    w: &PackedWeight<Fusion<B>>,
    out_shape: Shape,
) -> FloatTensor<Fusion<B>> {
    let client = x.client.clone();
    let (words, scales, zero_points) = w.primitives();
    let inputs = [x, words, scales, zero_points];
    let streams = OperationStreams::with_inputs(&inputs);
    let out = TensorIr::uninit(client.create_empty_handle(), out_shape, inputs[0].dtype());
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let desc = CustomOpIr::new("moq_quantized_matmul", &inputs, &[out]);
    let op = QuantizedMatmul::<B> {
        desc: desc.clone(),
        shape: w.shape(),
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
fn computed<B: FusionBackend>(
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

//! `Autodiff<B>`: fake quantization with a straight-through backward.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use moq_core::QuantSpec;

use super::MoqBackend;
use crate::error::Result;

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
    fn burn_quantized_bits() -> &'static [u32] {
        B::burn_quantized_bits()
    }

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

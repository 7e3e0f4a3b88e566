//! LibTorch (burn-tch, feature `tch`): fake quantization through the generic host path
//! ([`fake_quantize_on_host`]: the tensor's data read out, `moq-core`'s quantizer, written back),
//! and the low-bit matmul through the tensor-ops default. moq-burn has no `unsafe`, so the
//! tensor's memory is not read in place.

use burn::backend::LibTorch;
use burn::backend::libtorch::TchElement;
use burn::tensor::ops::FloatTensor;
use moq_core::QuantSpec;

use super::MoqBackend;
use super::host::fake_quantize_on_host;
use crate::error::Result;

impl<E: TchElement> MoqBackend for LibTorch<E> {
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        fake_quantize_on_host::<Self>(tensor, name, spec, mix_ratio)
    }
}

//! Flex (burn-flex, feature `flex`), burn 0.21's pure-Rust CPU backend (SIMD, rayon, the
//! `gemm` crate's matmul): fake quantization through the generic host path
//! ([`fake_quantize_on_host`]), the low-bit matmul through the tensor-ops default. It needs
//! nothing outside cargo, unlike LibTorch.

use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use moq_core::QuantSpec;

use super::MoqBackend;
use super::host::fake_quantize_on_host;
use crate::error::Result;

impl MoqBackend for Flex {
    fn fake_quantize(
        tensor: FloatTensor<Self>,
        name: &str,
        spec: &QuantSpec,
        mix_ratio: f32,
    ) -> Result<FloatTensor<Self>> {
        fake_quantize_on_host::<Self>(tensor, name, spec, mix_ratio)
    }
}

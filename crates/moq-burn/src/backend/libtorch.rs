//! LibTorch (burn-tch, feature `tch`): fake quantization by `moq-core`'s quantizer on the
//! tensor's own memory. A CPU tensor in f32 and row order is read where LibTorch holds it and
//! quantized into a new LibTorch tensor, with no copy to or from burn's `TensorData` (the
//! generic [`fake_quantize_on_host`] makes three); any other tensor (a GPU device, f16, a
//! strided view) takes the generic path. The low-bit matmul is the tensor-ops default.

use burn::backend::LibTorch;
use burn::backend::libtorch::{TchElement, TchTensor};
use burn::tensor::ops::FloatTensor;
use moq_core::{QuantSpec, fake_quantize_mixed};

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
        let t = &tensor.tensor;
        if t.device() != tch::Device::Cpu || t.kind() != tch::Kind::Float || !t.is_contiguous() {
            return fake_quantize_on_host::<Self>(tensor, name, spec, mix_ratio);
        }
        let len = t.numel();
        let out = t.zeros_like();
        // SAFETY: `t` is a contiguous CPU tensor of `len` f32 values, alive for this borrow, and
        // `out` a new one of the same size that nothing else refers to yet; `data_ptr` of an
        // empty tensor may be null, so empty tensors are not turned into slices.
        let (input, output) = unsafe {
            if len == 0 {
                (&[][..], &mut [][..])
            } else {
                (
                    std::slice::from_raw_parts(t.data_ptr() as *const f32, len),
                    std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, len),
                )
            }
        };
        fake_quantize_mixed(name, input, output, spec, mix_ratio)?;
        Ok(TchTensor::new(out))
    }
}

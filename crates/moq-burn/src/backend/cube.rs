//! burn's cubecl backends (`CubeBackend`: burn-wgpu and burn-cuda): `moq-kernels`.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};
use half::{bf16, f16};
use moq_core::QuantSpec;
use moq_kernels::KernelError;

use super::MoqBackend;
use super::host::fake_quantize_on_host;
use super::packed::{PackedWeight, kernel_output_shape};
use super::tensor_ops::{fake_quantize_tensor_ops, quantized_matmul_tensor_ops};
use crate::error::{MoqBurnError, Result};

/// burn's cubecl backends (burn-wgpu, burn-cuda): `moq-kernels`' fused kernel, one per tensor
/// (a per-group reduction, then one pass over the tensor), on the device. f32, f16 and bf16
/// tensors; other dtypes take the tensor-ops path. A NaN or infinity is then located by the
/// host reference, so the error names the element, as on every backend.
impl<R, F, I, BT> MoqBackend for burn_cubecl::CubeBackend<R, F, I, BT>
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::BoolElement,
{
    fn burn_quantized_bits() -> &'static [u32] {
        &[8, 4]
    }

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

    fn quantized_matmul(x: FloatTensor<Self>, w: &PackedWeight<Self>) -> Result<FloatTensor<Self>> {
        use burn_cubecl::kernel::into_contiguous;
        use moq_core::ScaleFormat;
        let packed = w.shape();
        let k = packed.rows;
        let x = into_contiguous(x);
        let shape = x.shape();
        let out_shape = kernel_output_shape(shape.as_slice(), k, packed.row_len)?;
        let (words, scales, zero_points) = w.primitives();
        let scale_format = match scales.dtype {
            DType::F32 => ScaleFormat::F32,
            DType::F16 => ScaleFormat::F16,
            _ => return quantized_matmul_tensor_ops::<Self>(x, w),
        };
        let four_bytes =
            |t: &burn_cubecl::tensor::CubeTensor<R>| matches!(t.dtype, DType::I32 | DType::U32);
        if !four_bytes(&words)
            || !four_bytes(&zero_points)
            || !matches!(x.dtype, DType::F32 | DType::F16)
        {
            return quantized_matmul_tensor_ops::<Self>(x, w);
        }
        let (words, scales, zero_points) = (
            into_contiguous(words),
            into_contiguous(scales),
            into_contiguous(zero_points),
        );
        let weights = moq_kernels::DeviceWeights::from_parts(
            words.handle.clone(),
            scales.handle.clone(),
            zero_points.handle.clone(),
            packed,
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

//! The host path: `moq-core`'s quantizer on the tensor's host data (what NdArray runs).

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorData, try_read_sync};
use half::{bf16, f16};
use moq_core::{Element, QuantSpec, fake_quantize_mixed};

use crate::error::{MoqBurnError, Result};

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
    let shape = data.shape.clone();
    let out = match data.dtype {
        DType::F32 => on_slice(slice_of::<f32>(&data, name)?, shape, name, spec, mix_ratio)?,
        DType::F16 => on_slice(slice_of::<f16>(&data, name)?, shape, name, spec, mix_ratio)?,
        DType::BF16 => on_slice(slice_of::<bf16>(&data, name)?, shape, name, spec, mix_ratio)?,
        DType::F64 => {
            let wide = data.clone().convert::<f32>();
            on_slice(slice_of::<f32>(&wide, name)?, shape, name, spec, mix_ratio)?.convert::<f64>()
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

/// `input` (of `shape`) fake-quantized into a new tensor's data.
pub(super) fn on_slice<T: Element + burn::tensor::Element>(
    input: &[T],
    shape: burn::tensor::Shape,
    name: &str,
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<TensorData> {
    let mut output = input.to_vec();
    fake_quantize_mixed(name, input, &mut output, spec, mix_ratio)?;
    Ok(TensorData::new(output, shape))
}

/// The values of `data` as `T`.
fn slice_of<'a, T: burn::tensor::Element>(data: &'a TensorData, name: &str) -> Result<&'a [T]> {
    data.as_slice::<T>().map_err(|e| MoqBurnError::Read {
        tensor: name.to_string(),
        message: format!("{e:?}"),
    })
}

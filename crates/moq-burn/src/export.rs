//! Loading a MoQ export back into a burn model: [`load_dequantized`] fills a model's float
//! parameters from the file, dequantizing the packed codes (the generic path, on any backend,
//! until `QuantizedLinear` multiplies with the codes directly). Export with
//! [`crate::MoqOptimizer::export`].

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moq_core::export::MoqFile;

use crate::error::{MoqBurnError, Result};

/// `model` with every float parameter replaced by its value in `file` (quantized tensors are
/// dequantized), matched by module path. A parameter missing from the file, a tensor of the file
/// the model does not have, or a shape that differs is an error naming the tensor.
pub fn load_dequantized<B: Backend, M: Module<B>>(model: M, file: &MoqFile) -> Result<M> {
    let mut values: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    for e in &file.quantized {
        let q = moq_core::unpack(&e.packed)?;
        let mut v = vec![0.0f32; e.packed.len];
        moq_core::dequantize(&q, &mut v)?;
        values.insert(e.name.clone(), (e.shape.clone(), v));
    }
    for (name, shape, v) in &file.float {
        values.insert(name.clone(), (shape.clone(), v.clone()));
    }
    let mut loader = Loader {
        path: Vec::new(),
        values,
        error: None,
    };
    let model = model.map(&mut loader);
    if let Some(err) = loader.error {
        return Err(err);
    }
    if let Some(name) = loader.values.keys().min() {
        return Err(MoqBurnError::Export {
            reason: format!("the file has a tensor `{name}` that the model does not"),
        });
    }
    Ok(model)
}

struct Loader {
    path: Vec<String>,
    values: HashMap<String, (Vec<usize>, Vec<f32>)>,
    error: Option<MoqBurnError>,
}

impl<B: Backend> ModuleMapper<B> for Loader {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = self.path.join(".");
        let expected = param.lazy_shape().dims::<D>().to_vec();
        let Some((shape, values)) = self.values.remove(&path) else {
            self.error.get_or_insert(MoqBurnError::Export {
                reason: format!("the file has no tensor `{path}`"),
            });
            return param;
        };
        if shape != expected {
            self.error.get_or_insert(MoqBurnError::Export {
                reason: format!("`{path}`: the file has shape {shape:?}, the model {expected:?}"),
            });
            return param;
        }
        let device = param.lazy_device();
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let value = Tensor::<B, D>::from_data(TensorData::new(values, shape), &device);
        Param::from_mapped_value(id, value.set_require_grad(require_grad), mapper)
    }
}

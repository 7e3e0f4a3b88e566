//! The trained weights as packed codes, and back: [`MoqOptimizer::export`] quantizes the
//! masters at the bits each layer reached into a [`MoqFile`] (save it with [`MoqFile::save`]);
//! [`load_dequantized`] fills a model's float parameters from such a file, dequantizing the
//! codes (on any backend; [`crate::QuantizedLinear`] multiplies with the codes directly).

use std::collections::HashMap;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use moq_core::export::{Exported, MoqFile};
use moq_core::{CodeLayout, QuantSpec, ScaleFormat};
use moq_hessian::path::{NamedMapper, float_params, map_named};

use crate::error::{MoqBurnError, Result};
use crate::optim::MoqOptimizer;

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
        values,
        error: None,
    };
    let model = map_named(model, &mut loader);
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
    values: HashMap<String, (Vec<usize>, Vec<f32>)>,
    error: Option<MoqBurnError>,
}

impl<B: Backend> NamedMapper<B> for Loader {
    fn map_named<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let expected = param.lazy_shape().dims::<D>().to_vec();
        let Some((shape, values)) = self.values.remove(path) else {
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

impl<O, M, B> MoqOptimizer<O, M, B>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    /// The trained model as real low-bit codes: each quantized parameter's full-precision
    /// master quantized at the bits its layer reached (rounding to nearest), packed eight 4-bit
    /// or four 8-bit codes per `u32` with f32 scales per group; every other float parameter of
    /// `model` in f32. Save it with [`MoqFile::save`]; `moq inspect` prints what it holds.
    ///
    /// With nearest rounding and no mixing, dequantizing the codes gives exactly the weights the
    /// model was using after its last step.
    pub fn export(&self, model: &M) -> Result<MoqFile> {
        self.export_with(model, |layer| {
            self.schedule
                .bits(layer)
                .ok_or_else(|| MoqBurnError::Export {
                    reason: "no quantizing step has been taken yet: nothing to export".into(),
                })
        })
    }

    /// Post-training quantization: `model` as it is, each quantized parameter rounded once
    /// (to nearest) at its layer's *target* bits, whatever the schedule has reached, and packed
    /// like [`MoqOptimizer::export`]. Call it on a fresh wrapper of a trained full-precision
    /// model to get what rounding after training gives, with no quantization-aware training.
    pub fn export_at_target(&self, model: &M) -> Result<MoqFile> {
        let specs = self.schedule.specs();
        self.export_with(model, |layer| Ok(specs[layer].target_bits))
    }

    fn export_with(&self, model: &M, bits_of: impl Fn(usize) -> Result<u32>) -> Result<MoqFile> {
        // Host copies of what is exported as is: the parameters that have no master.
        let mut values = FloatValues {
            skip: &self.masters,
            values: HashMap::new(),
        };
        model.visit(&mut values);
        let mut file = MoqFile::default();
        for f in float_params(model) {
            let Some(&i) = self.index.get(&f.id) else {
                let Some(v) = values.values.remove(&f.id) else {
                    continue;
                };
                file.float.push((f.path, f.shape, v));
                continue;
            };
            let p = &self.params[i];
            let bits = bits_of(p.layer)?;
            let master = match self.masters.get(&p.id) {
                Some(m) => host_values(m.clone(), &p.path)?,
                None => values.values.remove(&p.id).unwrap_or_default(),
            };
            let mut spec = QuantSpec::from_config(&self.config, bits);
            spec.rounding = moq_core::Rounding::Nearest;
            let q = moq_core::quantize(&p.path, &master, &spec)?;
            let row_len = *p.shape.last().unwrap_or(&1);
            let packed = moq_core::pack(&q, row_len, CodeLayout::Packed32, ScaleFormat::F32)?;
            file.quantized.push(Exported {
                name: p.path.clone(),
                shape: p.shape.clone(),
                packed,
            });
        }
        Ok(file)
    }
}

fn host_values<IB: Backend>(t: Tensor<IB, 1>, path: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| MoqBurnError::Read {
            tensor: path.to_string(),
            message: format!("{e:?}"),
        })
}

/// The host values of every float parameter that has no master in `skip`.
struct FloatValues<'a, IB: Backend> {
    skip: &'a HashMap<ParamId, Tensor<IB, 1>>,
    values: HashMap<ParamId, Vec<f32>>,
}

impl<B: Backend, IB: Backend> ModuleVisitor<B> for FloatValues<'_, IB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.skip.contains_key(&param.id) {
            return;
        }
        if let Ok(v) = param.val().into_data().convert::<f32>().into_vec::<f32>() {
            self.values.insert(param.id, v);
        }
    }
}

//! The trained weights as packed codes: [`MoqOptimizer::export`] quantizes the masters at the
//! bits each layer reached into a [`MoqFile`] (save it with [`MoqFile::save`]); [`crate::serve`]
//! puts such a file back into a model (as codes, as burn's quantized tensors, or dequantized).

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use moq_core::export::{Exported, MoqFile};
use moq_core::{CodeLayout, ScaleFormat};
use moq_hessian::path::float_params;

use super::MoqOptimizer;
use crate::error::{MoqBurnError, Result};

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
            let mut spec = p.spec(&self.config, bits);
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

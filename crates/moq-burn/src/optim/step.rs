//! One training step of the wrapper (the guide's algorithm page (docs/algorithm.md), "Where it runs"): skip a step whose
//! gradient is not finite, restore the masters, let the inner optimizer step, advance the
//! schedule (asking for eigenvalues just before a drop), and write the fake-quantized masters
//! into the model. With `quantize_training.enabled: false` every step goes to the inner
//! optimizer unchanged.

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use moq_core::{NoiseKey, QuantSpec};

use super::record::MoqRecord;
use super::{MoqOptimizer, QuantParam};
use crate::backend::{MoqBackend, fake_quantize};
use crate::error::MoqBurnError;

impl<O, M, B> MoqOptimizer<O, M, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    fn restore(&self, module: M) -> M {
        module.map(&mut Restore {
            index: &self.index,
            params: &self.params,
            masters: &self.masters,
        })
    }

    fn after_step(&mut self, module: M) -> M {
        let e = &self.config.eigenvalue;
        let due = (self.schedule.steps_taken() + 1).is_multiple_of(e.gas_boundary_resolution);
        if e.enabled && self.eigenvalues.is_none() && self.schedule.steps_taken() == 0 {
            log::warn!(
                "MoQ: eigenvalue.enabled is set but no EigenvalueProvider is attached \
                 (MoqOptimizer::with_eigenvalues): periods are not stretched"
            );
        }
        if e.enabled && due && self.schedule.drops_within(e.gas_boundary_resolution) {
            let values = match self.eigenvalues.as_ref().map(|p| p.lock()) {
                Some(Ok(mut provider)) => provider.eigenvalues(&module, &self.layers),
                _ => Ok(None),
            };
            let set = values.and_then(|v| match v {
                Some(v) => Ok(self.schedule.set_eigenvalues(&v)?),
                None => Ok(()),
            });
            if let Err(err) = set {
                self.record_error(err);
            }
        }
        // Second-order bit allocation at the end of the warm-up, on the weights just stepped.
        if let Some(auto) = self.auto_bits.clone()
            && self.allocation.is_none()
            && self.schedule.steps_taken() == self.schedule.schedule_offset()
            && let Err(err) = self.allocate_bits(&module, &auto)
        {
            self.record_error(err);
        }
        let report = self.schedule.step();
        if self.config.verbose {
            for d in &report.drops {
                log::info!(
                    "MoQ step {}: layer {} ({}) {} → {} bits",
                    report.step,
                    d.layer,
                    self.layers[d.layer].name,
                    d.from,
                    d.to
                );
            }
        }
        let specs: Option<Vec<(QuantSpec, f32)>> = report.quantize.then(|| {
            self.params
                .iter()
                .map(|p| {
                    let bits = self.schedule.bits(p.layer).expect("quantizing step");
                    let mut spec = p.spec(&self.config, bits);
                    spec.noise = NoiseKey {
                        seed: self.seed,
                        step: report.step,
                        stream: p.stream,
                    };
                    (spec, self.schedule.mix_ratio(p.layer))
                })
                .collect()
        });
        let mut mapper = Quantize {
            index: &self.index,
            params: &self.params,
            masters: &mut self.masters,
            specs: specs.as_deref(),
            error: None,
        };
        let module = module.map(&mut mapper);
        if let Some(err) = mapper.error {
            self.record_error(err);
        }
        self.publish_status();
        module
    }

    pub(super) fn record_error(&self, err: MoqBurnError) {
        log::error!("MoQ: {err}");
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(err);
        }
    }

    fn skip(&mut self, module: M) -> M {
        self.skipped_steps += 1;
        self.publish_status();
        log::warn!(
            "MoQ: gradient holds NaN or Inf; step skipped ({} so far)",
            self.skipped_steps
        );
        module
    }
}

impl<O, M, B> Optimizer<M, B> for MoqOptimizer<O, M, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    type Record = MoqRecord<O::Record, B>;

    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        // `quantize_training.enabled: false`: as in DeepSpeed, training is left alone.
        if !self.config.enabled {
            return self.inner.step(lr, module, grads);
        }
        if !grads_finite::<B, M>(&module, std::iter::once(&grads)) {
            return self.skip(module);
        }
        let module = self.restore(module);
        let module = self.inner.step(lr, module, grads);
        self.after_step(module)
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        if !self.config.enabled {
            return self.inner.step_multi(lr, module, grads);
        }
        if !grads_finite::<B, M>(&module, grads.grads.iter().map(|(g, _)| g)) {
            return self.skip(module);
        }
        let module = self.restore(module);
        let module = self.inner.step_multi(lr, module, grads);
        self.after_step(module)
    }

    fn to_record(&self) -> Self::Record {
        self.save()
    }

    fn load_record(self, record: Self::Record) -> Self {
        self.load(record)
    }
}

/// Whether every gradient is finite: `Σ sum(g · 0)` is 0 for finite gradients and NaN
/// otherwise, read once per device group.
fn grads_finite<'a, B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: impl Iterator<Item = &'a GradientsParams>,
) -> bool {
    grads.into_iter().all(|g| {
        let mut check = FiniteCheck::<B> {
            grads: g,
            acc: None,
        };
        module.visit(&mut check);
        check
            .acc
            .is_none_or(|acc| acc.into_scalar().elem::<f32>().is_finite())
    })
}

struct FiniteCheck<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for FiniteCheck<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let zero = g.mul_scalar(0.0).sum();
            let zero = match &self.acc {
                Some(acc) if acc.device() != zero.device() => zero.to_device(&acc.device()),
                _ => zero,
            };
            self.acc = Some(match self.acc.take() {
                Some(acc) => acc + zero,
                None => zero,
            });
        }
    }
}

/// Puts the masters back into the module before the inner optimizer's step.
struct Restore<'a, IB: Backend> {
    index: &'a HashMap<ParamId, usize>,
    params: &'a [QuantParam],
    masters: &'a HashMap<ParamId, Tensor<IB, 1>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Restore<'_, B::InnerBackend> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (Some(&i), Some(master)) = (self.index.get(&param.id), self.masters.get(&param.id))
        else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let device = tensor.device();
        let mut restored = Tensor::<B, D>::from_inner(
            master
                .clone()
                .reshape::<D, _>(self.params[i].shape_as::<D>()),
        );
        if restored.device() != device {
            restored = restored.to_device(&device);
        }
        Param::from_mapped_value(id, restored.set_require_grad(require_grad), mapper)
    }
}

/// Stores the new masters and writes the quantized weights (on quantizing steps).
struct Quantize<'a, IB: Backend> {
    index: &'a HashMap<ParamId, usize>,
    params: &'a [QuantParam],
    masters: &'a mut HashMap<ParamId, Tensor<IB, 1>>,
    /// Spec and mixing ratio per parameter, on quantizing steps.
    specs: Option<&'a [(QuantSpec, f32)]>,
    error: Option<MoqBurnError>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Quantize<'_, B::InnerBackend>
where
    B::InnerBackend: MoqBackend,
{
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(&i) = self.index.get(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let master = tensor.inner();
        let numel = self.params[i].shape.iter().product::<usize>();
        self.masters.insert(id, master.clone().reshape([numel]));
        let value = match self.specs {
            Some(specs) => {
                let (spec, mix) = &specs[i];
                match fake_quantize(master.clone(), &self.params[i].path, spec, *mix) {
                    Ok(q) => q,
                    Err(err) => {
                        self.error = Some(err);
                        master
                    }
                }
            }
            None => master,
        };
        Param::from_mapped_value(
            id,
            Tensor::from_inner(value).set_require_grad(require_grad),
            mapper,
        )
    }
}

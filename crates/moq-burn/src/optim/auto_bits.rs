//! Second-order bit allocation in training ([`super::Moq::auto_bits`], docs/algorithm.md):
//! at the end of the warm-up (the step before the first quantizing one) the wrapper measures
//! each layer's quantization error at every candidate width on its current weights, asks the
//! eigenvalue provider for each layer's sensitivity `|λ|` (1 for every layer without one),
//! solves `moq_core::allocate` under the budget, and makes each layer's chosen width its
//! target. With a schedule (MoQ: start above target) the schedule then takes every layer there
//! from the start width as usual, a width above the start capped at it; without one (basic
//! QAT: start = target) each layer trains at its chosen width from the first quantizing step,
//! so the budget is spent whole.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::Optimizer;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use moq_core::allocate::{Budget, LayerCurve, WidthOption, allocate, measure};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use super::MoqOptimizer;
use crate::backend::MoqBackend;
use crate::error::{MoqBurnError, Result};

/// What [`super::Moq::auto_bits`] asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoBits {
    /// The size budget.
    pub budget: Budget,
    /// Candidate widths (those the run's grid cannot use are left out, with a warning).
    pub candidates: Vec<u32>,
}

/// One layer's allocation: what it saw and what it chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerAllocation {
    /// The layer's name.
    pub layer: String,
    /// Its sensitivity `s` (the provider's `|λ|`, or 1).
    pub sensitivity: f64,
    /// Its quantized weights `n`.
    pub params: usize,
    /// `‖Q_b(W) − W‖²_F` summed over its parameters, per candidate width `b`.
    pub errors: Vec<(u32, f64)>,
    /// The chosen width (its target from now on).
    pub bits: u32,
}

/// Reads the float values of the parameters MoQ quantizes.
struct Collect<'a> {
    index: &'a HashMap<ParamId, usize>,
    values: HashMap<ParamId, Vec<f32>>,
    error: Option<MoqBurnError>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.index.contains_key(&param.id) {
            return;
        }
        match param.val().into_data().convert::<f32>().to_vec::<f32>() {
            Ok(v) => {
                self.values.insert(param.id, v);
            }
            Err(e) => {
                self.error = Some(MoqBurnError::Record {
                    reason: format!("cannot read a weight for bit allocation: {e:?}"),
                })
            }
        }
    }
}

impl<O, M, B> MoqOptimizer<O, M, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    /// Allocates every layer's width on `module`'s current weights and sets the targets.
    pub(super) fn allocate_bits(&mut self, module: &M, auto: &AutoBits) -> Result<()> {
        let mut collect = Collect {
            index: &self.index,
            values: HashMap::new(),
            error: None,
        };
        module.visit(&mut collect);
        if let Some(e) = collect.error {
            return Err(e);
        }
        let usable = self.usable_widths(&auto.candidates);
        let sensitivities = match self.eigenvalues.as_ref().map(|p| p.lock()) {
            Some(Ok(mut provider)) => provider.sensitivities(module, &self.layers)?,
            _ => None,
        };
        if let Some(s) = &sensitivities
            && s.len() != self.layers.len()
        {
            return Err(MoqBurnError::Core(moq_core::MoqError::Allocation {
                reason: format!("{} sensitivities for {} layers", s.len(), self.layers.len()),
            }));
        }
        let curves = self.layer_curves(&collect.values, sensitivities.as_deref(), &usable)?;
        let allocation = allocate(&curves, &auto.budget)?;
        // A scheduled layer (MoQ) starting below its allocated width stays at its start; one
        // without a schedule (QAT: start = target) trains at its allocated width from now on,
        // above or below the uniform one (Schedule::set_targets).
        let targets: Vec<u32> = allocation
            .bits
            .iter()
            .zip(self.schedule.specs())
            .map(|(&b, spec)| {
                if spec.has_schedule() {
                    b.min(spec.start_bits)
                } else {
                    b
                }
            })
            .collect();
        self.schedule.set_targets(&targets)?;
        let report: Vec<LayerAllocation> = curves
            .iter()
            .zip(&targets)
            .map(|(c, &bits)| LayerAllocation {
                layer: c.name.clone(),
                sensitivity: c.sensitivity,
                params: c.params,
                errors: c.options.iter().map(|o| (o.bits, o.error)).collect(),
                bits,
            })
            .collect();
        self.log_allocation(&report, allocation.average_bits, allocation.objective);
        self.allocation = Some(std::sync::Arc::new(report));
        Ok(())
    }

    /// The widths of `candidates` the run's grid and rounding can use, with a warning naming
    /// the others.
    fn usable_widths(&self, candidates: &[u32]) -> Vec<u32> {
        let usable: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|&b| {
                self.params.iter().all(|p| {
                    p.spec(&self.config, b)
                        .check(&p.path, p.shape.iter().product())
                        .is_ok()
                })
            })
            .collect();
        if usable.len() < candidates.len() {
            log::warn!(
                "MoQ: bit allocation leaves out widths {:?}: the run's grid cannot use them",
                candidates
                    .iter()
                    .filter(|b| !usable.contains(b))
                    .collect::<Vec<_>>()
            );
        }
        usable
    }

    /// Each layer's error curve at the `usable` widths: its parameters' curves summed.
    fn layer_curves(
        &self,
        values: &HashMap<ParamId, Vec<f32>>,
        sensitivities: Option<&[f32]>,
        usable: &[u32],
    ) -> Result<Vec<LayerCurve>> {
        let mut curves: Vec<LayerCurve> = self
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| LayerCurve {
                name: layer.name.clone(),
                params: 0,
                sensitivity: sensitivities.map_or(1.0, |s| s[l] as f64),
                options: usable
                    .iter()
                    .map(|&bits| WidthOption {
                        bits,
                        error: 0.0,
                        overhead_bits: 0,
                        export_bytes: Some(0),
                    })
                    .collect(),
            })
            .collect();
        for p in self.params.iter() {
            let values = values.get(&p.id).ok_or_else(|| MoqBurnError::Record {
                reason: format!("`{}` is not in the model", p.path),
            })?;
            let cols = *p.shape.last().unwrap_or(&1);
            let part = measure(
                &p.path,
                values,
                [values.len() / cols.max(1), cols],
                curves[p.layer].sensitivity,
                &p.spec(&self.config, self.config.start_bits),
                usable,
            )?;
            let curve = &mut curves[p.layer];
            curve.params += part.params;
            for (total, o) in curve.options.iter_mut().zip(part.options) {
                total.error += o.error;
                total.overhead_bits += o.overhead_bits;
                total.export_bytes = total.export_bytes.zip(o.export_bytes).map(|(a, b)| a + b);
            }
        }
        Ok(curves)
    }

    /// The allocation in the log: each layer when verbose, the average always.
    fn log_allocation(&self, report: &[LayerAllocation], average_bits: f64, objective: f64) {
        if self.config.verbose {
            for a in report {
                log::info!(
                    "MoQ bit allocation: layer {} (s = {:.4e}, {} weights) → {} bits",
                    a.layer,
                    a.sensitivity,
                    a.params,
                    a.bits
                );
            }
        }
        log::info!(
            "MoQ bit allocation: {:.3} bits per weight on average ({} layers, objective {:.4e})",
            average_bits,
            report.len(),
            objective
        );
    }
}

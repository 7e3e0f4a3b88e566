//! Hessian eigenvalues for the schedule: [`moq_hessian`]'s power iteration over the wrapper's
//! layers, as an [`EigenvalueProvider`].
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::AdamConfig;
//! use burn::tensor::{Tensor, TensorData, backend::Backend};
//! use moq_burn::moq_hessian::{HessianEigenvalues, HessianLoss};
//! use moq_burn::{HessianProvider, Moq, moq_core::QuantizeConfig};
//!
//! /// The loss on a probe batch, for any backend.
//! struct Probe(TensorData);
//!
//! impl HessianLoss for Probe {
//!     type Model<B: Backend> = Linear<B>;
//!     fn model<B: Backend>(&self, device: &B::Device) -> Linear<B> {
//!         LinearConfig::new(8, 4).init(device)
//!     }
//!     fn loss<B: Backend>(&self, model: &Linear<B>) -> Tensor<B, 1> {
//!         let x = Tensor::<B, 2>::from_data(self.0.clone(), &model.weight.device());
//!         model.forward(x).powi_scalar(2).mean()
//!     }
//! }
//!
//! type B = Autodiff<NdArray>;
//! let config = QuantizeConfig::from_json_str(
//!     r#"{"quantize_training": {"enabled": true,
//!          "quantize_bits": {"start_bits": 12, "target_bits": 8},
//!          "quantize_schedule": {"quantize_period": 4, "schedule_offset": 0},
//!          "eigenvalue": {"enabled": true, "max_iter": 20}}}"#,
//! )
//! .unwrap();
//! let model: Linear<B> = LinearConfig::new(8, 4).init(&Default::default());
//! let probe = Probe(TensorData::new(vec![0.5f32; 16], [2, 8]));
//! let estimator = HessianEigenvalues::new(probe, &config.eigenvalue);
//! let optim = Moq::new(config)
//!     .init(AdamConfig::new().init(), &model)
//!     .unwrap()
//!     .with_eigenvalues(HessianProvider::<B, _>::new(estimator));
//! ```

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use moq_hessian::{Block, EigenReport, HessianEigenvalues, HessianLoss, Weights};

use crate::error::{MoqBurnError, Result};
use crate::optim::{EigenvalueProvider, MoqLayer};

/// Computes each layer's top Hessian eigenvalue when the schedule needs it (see
/// [`EigenvalueProvider`] for when), at the full-precision weights after the optimizer step,
/// and keeps a [`EigenHistory`] of what each computation found and cost.
pub struct HessianProvider<B: AutodiffBackend, L: HessianLoss> {
    estimator: HessianEigenvalues<B::InnerBackend, L>,
    history: EigenHistory,
    _backend: PhantomData<fn() -> B>,
}

/// The computations a [`HessianProvider`] made, shared: take it before handing the optimizer
/// over, read it during or after training.
#[derive(Clone, Debug, Default)]
pub struct EigenHistory {
    records: Arc<Mutex<Vec<EigenRecord>>>,
}

/// One computation.
#[derive(Clone, Debug, PartialEq)]
pub struct EigenRecord {
    /// Per-layer eigenvalues, iterations and the normalised values given to the schedule.
    pub report: EigenReport,
    /// Wall-clock seconds it took.
    pub seconds: f64,
}

impl EigenHistory {
    /// Every computation so far, oldest first.
    pub fn records(&self) -> Vec<EigenRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl<B: AutodiffBackend, L: HessianLoss> HessianProvider<B, L> {
    /// Wraps an estimator (its config, method, seed and warm-start choice).
    pub fn new(estimator: HessianEigenvalues<B::InnerBackend, L>) -> Self {
        Self {
            estimator,
            history: EigenHistory::default(),
            _backend: PhantomData,
        }
    }

    /// The shared record of computations.
    pub fn history(&self) -> EigenHistory {
        self.history.clone()
    }
}

impl<B: AutodiffBackend, L: HessianLoss> HessianProvider<B, L> {
    /// One computation over the layers, recorded in the history.
    fn compute<M: AutodiffModule<B>>(
        &mut self,
        model: &M,
        layers: &[MoqLayer],
    ) -> Result<EigenReport> {
        let start = Instant::now();
        let weights = Weights::from_module(&model.valid());
        let blocks: Vec<Block> = layers
            .iter()
            .map(|l| Block::new(l.name.clone(), l.params.iter().cloned()))
            .collect();
        let report = self.estimator.compute(&weights, &blocks)?;
        if let Ok(mut records) = self.history.records.lock() {
            records.push(EigenRecord {
                report: report.clone(),
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        Ok(report)
    }
}

impl<B, M, L> EigenvalueProvider<M> for HessianProvider<B, L>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    L: HessianLoss + Send,
{
    fn eigenvalues(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>> {
        Ok(Some(self.compute(model, layers)?.normalized))
    }

    fn sensitivities(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>> {
        let report = self.compute(model, layers)?;
        Ok(Some(
            report.blocks.iter().map(|b| b.eigenvalue.abs()).collect(),
        ))
    }

    fn save_state(&self) -> Option<String> {
        serde_json::to_string(&self.estimator.state()).ok()
    }

    fn load_state(&mut self, state: &str) -> Result<()> {
        let state = serde_json::from_str(state).map_err(|e| MoqBurnError::Record {
            reason: format!("eigenvalue state: {e}"),
        })?;
        self.estimator.load_state(state);
        Ok(())
    }
}

//! The wrapper's record: the inner optimizer's record, the full-precision masters and the
//! schedule, checked against the optimizer on load.

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::Record;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use moq_core::Schedule;
use serde::{Deserialize, Serialize};

use super::{LayerAllocation, MoqOptimizer};
use crate::backend::MoqBackend;
use crate::error::{MoqBurnError, Result};

impl<O, M, B> MoqOptimizer<O, M, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    /// [`Optimizer::to_record`].
    pub(super) fn save(&self) -> MoqRecord<O::Record, B> {
        let state = SavedState {
            params: self.params.iter().map(|p| p.path.clone()).collect(),
            schedule: self.schedule.clone(),
            skipped_steps: self.skipped_steps,
            seed: self.seed,
            eigenvalues: self
                .eigenvalues
                .as_ref()
                .and_then(|p| p.lock().ok()?.save_state()),
            allocation: self.allocation.as_ref().map(|a| a.to_vec()),
        };
        MoqRecord {
            inner: self.inner.to_record(),
            masters: self
                .params
                .iter()
                .map(|p| {
                    self.masters
                        .get(&p.id)
                        .map(|t| Tensor::from_inner(t.clone()))
                })
                .collect(),
            state: serde_json::to_string(&state).expect("MoQ state serializes"),
        }
    }

    /// [`Optimizer::load_record`].
    pub(super) fn load(mut self, record: MoqRecord<O::Record, B>) -> Self {
        // The Optimizer trait has no error channel: a state that does not fit is reported
        // through `take_error` and the optimizer keeps its current MoQ state.
        match self.check_record(&record) {
            Ok(state) => {
                if let (Some(saved), Some(provider)) = (&state.eigenvalues, &self.eigenvalues)
                    && let Ok(mut provider) = provider.lock()
                    && let Err(err) = provider.load_state(saved)
                {
                    self.record_error(err);
                }
                self.schedule = state.schedule;
                self.allocation = state.allocation.map(std::sync::Arc::new);
                self.skipped_steps = state.skipped_steps;
                self.seed = state.seed;
                self.masters = self
                    .params
                    .iter()
                    .zip(record.masters)
                    .filter_map(|(p, t)| Some((p.id, t?.inner())))
                    .collect();
            }
            Err(err) => self.record_error(err),
        }
        self.inner = self.inner.load_record(record.inner);
        self
    }
}

impl<O, M, B: AutodiffBackend> MoqOptimizer<O, M, B> {
    fn check_record(&self, record: &MoqRecord<impl Record<B>, B>) -> Result<SavedState> {
        let bad = |reason: String| MoqBurnError::Record { reason };
        let state: SavedState =
            serde_json::from_str(&record.state).map_err(|e| bad(e.to_string()))?;
        let paths: Vec<&str> = self.params.iter().map(|p| p.path.as_str()).collect();
        if state.params != paths {
            return Err(bad(format!(
                "it quantizes {} parameters ({}…), this optimizer {} ({}…)",
                state.params.len(),
                state.params.first().map_or("", String::as_str),
                paths.len(),
                paths.first().copied().unwrap_or("")
            )));
        }
        if state.schedule.num_layers() != self.layers.len() {
            return Err(bad(format!(
                "{} layers saved, {} here",
                state.schedule.num_layers(),
                self.layers.len()
            )));
        }
        if record.masters.len() != self.params.len() {
            return Err(bad(format!(
                "{} masters for {} parameters",
                record.masters.len(),
                self.params.len()
            )));
        }
        if let Some((p, _)) = self.params.iter().zip(&record.masters).find(|(p, t)| {
            t.as_ref()
                .is_some_and(|t| t.dims()[0] != p.shape.iter().product::<usize>())
        }) {
            return Err(bad(format!("master of `{}` has the wrong size", p.path)));
        }
        Ok(state)
    }
}

/// What the wrapper saves beyond the inner optimizer's record and the masters.
#[derive(Serialize, Deserialize)]
struct SavedState {
    params: Vec<String>,
    schedule: Schedule,
    skipped_steps: u64,
    seed: u64,
    /// The eigenvalue provider's state, if it has one.
    #[serde(default)]
    eigenvalues: Option<String>,
    /// The second-order bit allocation, once made (the targets themselves are in the
    /// schedule).
    #[serde(default)]
    allocation: Option<Vec<LayerAllocation>>,
}

/// The wrapper's record: the inner optimizer's record, the full-precision masters (flattened)
/// and the schedule state as JSON. Save it with full precision settings for a bit-exact resume.
#[derive(burn::record::Record)]
pub struct MoqRecord<R: Record<B>, B: Backend> {
    /// The inner optimizer's record.
    pub inner: R,
    /// Masters, flattened, in the order of the quantized parameters (`None` before the first
    /// step).
    pub masters: Vec<Option<Tensor<B, 1>>>,
    /// Schedule, counters and the list of quantized parameters, as JSON.
    pub state: String,
}

impl<R: Record<B> + Clone, B: Backend> Clone for MoqRecord<R, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            masters: self.masters.clone(),
            state: self.state.clone(),
        }
    }
}

//! [`MoqStatus`]: a live view of the schedule for metrics and progress displays.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::LayerAllocation;

/// A live view of a [`MoqOptimizer`](super::MoqOptimizer)'s schedule, updated after every step. Take it with
/// [`MoqOptimizer::status`](super::MoqOptimizer::status) before handing the optimizer to burn-train's `Learner`, and read it
/// from a metric or a progress display while training runs. It also keeps the snapshots of the
/// last [`MoqStatus::HISTORY`] steps, for readers that lag behind training (burn-train processes
/// metrics on another thread).
#[derive(Clone, Debug, Default)]
pub struct MoqStatus {
    inner: Arc<Mutex<VecDeque<StatusSnapshot>>>,
}

/// What [`MoqStatus`] reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusSnapshot {
    /// Optimizer steps taken (skipped steps not included).
    pub steps: u64,
    /// Steps skipped for non-finite gradients.
    pub skipped_steps: u64,
    /// Bits of each layer (`None` before the first quantizing step).
    pub bits: Vec<Option<u32>>,
    /// Mixing ratio `ρ` of each layer (0 when mixing is off).
    pub mix_ratios: Vec<f32>,
    /// The second-order bit allocation ([`super::Moq::auto_bits`]), once made.
    pub allocation: Option<Arc<Vec<LayerAllocation>>>,
}

impl MoqStatus {
    /// How many past snapshots are kept.
    pub const HISTORY: usize = 4096;

    /// The state after the latest step.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.inner
            .lock()
            .ok()
            .and_then(|h| h.back().cloned())
            .unwrap_or_default()
    }

    /// The state right after the `calls`-th call of `step` (taken or skipped, counted from 1),
    /// if it is among the last [`MoqStatus::HISTORY`].
    pub fn snapshot_after(&self, calls: u64) -> Option<StatusSnapshot> {
        let history = self.inner.lock().ok()?;
        history
            .iter()
            .rev()
            .find(|s| s.steps + s.skipped_steps == calls)
            .cloned()
    }

    pub(super) fn update(&self, snapshot: StatusSnapshot) {
        if let Ok(mut history) = self.inner.lock() {
            if history.len() == Self::HISTORY {
                history.pop_front();
            }
            history.push_back(snapshot);
        }
    }
}

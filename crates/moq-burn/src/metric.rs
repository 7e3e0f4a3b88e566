//! burn-train metrics that show MoQ's schedule on the `Learner`'s dashboard, read from a
//! [`MoqStatus`] (feature `train`).
//!
//! Take the status before handing the optimizer to the `Learner`, and register the metrics as
//! numeric training metrics. burn-train updates metrics on another thread, after the training
//! loop has moved on; so each metric counts the items it has seen and shows the schedule as it
//! was after that many optimizer steps (from the status's history). That is exact with one
//! optimizer step per training item (a single device, no gradient accumulation); otherwise the
//! metrics show the latest state when they run.
//!
//! ```text
//! let status = optim.status();
//! SupervisedTraining::new(dir, train, valid)
//!     .metric_train_numeric(BitsMetric::new(status.clone()))
//!     .metric_train_numeric(MixingMetric::new(status))
//!     .launch(Learner::new(model, optim, lr));
//! ```
//! (The test `metrics_show_the_schedule_in_the_learner` in `tests/training.rs` runs this.)

use std::sync::Arc;

use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};

use crate::optim::{MoqStatus, StatusSnapshot};

/// The bits of the quantized layers after the latest step: the mean is the plotted value, and
/// the text shows `min/mean/max` over layers. 0 before the first quantizing step.
#[derive(Clone)]
pub struct BitsMetric {
    status: MoqStatus,
    seen: u64,
    name: MetricName,
    state: NumericMetricState,
}

/// The mixing ratio `ρ` (the full-precision share, `fp16_mixed_quantize`), mean over layers.
#[derive(Clone)]
pub struct MixingMetric {
    status: MoqStatus,
    seen: u64,
    name: MetricName,
    state: NumericMetricState,
}

/// The snapshot after the `seen`-th step, or the latest one if that is not known.
fn at(status: &MoqStatus, seen: u64) -> StatusSnapshot {
    status
        .snapshot_after(seen)
        .unwrap_or_else(|| status.snapshot())
}

impl BitsMetric {
    /// Reads `status` (from [`crate::MoqOptimizer::status`]).
    pub fn new(status: MoqStatus) -> Self {
        Self {
            status,
            seen: 0,
            name: Arc::new("MoQ bits".to_string()),
            state: NumericMetricState::new(),
        }
    }

    /// `(min, mean, max)` bits over the layers now, `None` before the first quantizing step.
    pub fn summary(&self) -> Option<(u32, f64, u32)> {
        bits_summary(&self.status.snapshot())
    }
}

fn bits_summary(snapshot: &StatusSnapshot) -> Option<(u32, f64, u32)> {
    let bits: Vec<u32> = snapshot.bits.iter().flatten().copied().collect();
    let min = *bits.iter().min()?;
    let max = *bits.iter().max()?;
    let mean = bits.iter().map(|&b| b as f64).sum::<f64>() / bits.len() as f64;
    Some((min, mean, max))
}

impl MixingMetric {
    /// Reads `status` (from [`crate::MoqOptimizer::status`]).
    pub fn new(status: MoqStatus) -> Self {
        Self {
            status,
            seen: 0,
            name: Arc::new("MoQ mixing ratio".to_string()),
            state: NumericMetricState::new(),
        }
    }

    /// The mean mixing ratio over layers now (0 when mixing is off).
    pub fn mean(&self) -> f64 {
        mix_mean(&self.status.snapshot())
    }
}

fn mix_mean(snapshot: &StatusSnapshot) -> f64 {
    let ratios = &snapshot.mix_ratios;
    if ratios.is_empty() {
        return 0.0;
    }
    ratios.iter().map(|&r| r as f64).sum::<f64>() / ratios.len() as f64
}

impl Metric for BitsMetric {
    type Input = ();

    fn update(&mut self, _item: &(), _metadata: &MetricMetadata) -> SerializedEntry {
        self.seen += 1;
        let (min, mean, max) = bits_summary(&at(&self.status, self.seen)).unwrap_or((0, 0.0, 0));
        let mut entry = self
            .state
            .update(mean, 1, FormatOptions::new(self.name()).precision(2));
        entry.formatted = format!("{min}/{mean:.2}/{max} bits (min/mean/max)");
        entry
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn description(&self) -> Option<String> {
        Some("Bits of MoQ's quantized layers after the latest step".to_string())
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some("bits".to_string()),
            higher_is_better: false,
        }
        .into()
    }
}

impl Numeric for BitsMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

impl Metric for MixingMetric {
    type Input = ();

    fn update(&mut self, _item: &(), _metadata: &MetricMetadata) -> SerializedEntry {
        self.seen += 1;
        let mean = mix_mean(&at(&self.status, self.seen));
        self.state
            .update(mean, 1, FormatOptions::new(self.name()).precision(3))
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn description(&self) -> Option<String> {
        Some("Full-precision share of MoQ's mixed weights (fp16_mixed_quantize)".to_string())
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }
}

impl Numeric for MixingMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

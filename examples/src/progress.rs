//! Progress output for burn-train's `Learner`: one line per epoch.

use std::collections::{BTreeMap, HashMap};

use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// A burn-train renderer that prints one line per epoch and split with every metric's latest
/// text (burn's own CLI renderer prints a debug line per batch).
#[derive(Default)]
pub struct EpochLines {
    names: HashMap<MetricId, String>,
    train: BTreeMap<String, String>,
    valid: BTreeMap<String, String>,
}

impl EpochLines {
    fn record(
        names: &HashMap<MetricId, String>,
        into: &mut BTreeMap<String, String>,
        state: MetricState,
    ) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        let name = names
            .get(&entry.metric_id)
            .cloned()
            .unwrap_or_else(|| "metric".to_string());
        into.insert(name, entry.serialized_entry.formatted);
    }

    fn line(split: &str, item: &TrainingProgress, metrics: &BTreeMap<String, String>) {
        let Some(progress) = &item.progress else {
            return;
        };
        if progress.items_processed < progress.items_total {
            return;
        }
        let values: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "epoch {}/{} {split:<5} {}",
            item.global_progress.items_processed,
            item.global_progress.items_total,
            values.join(" | ")
        );
    }
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        Self::record(&self.names, &mut self.train, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        Self::record(&self.names, &mut self.valid, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        Self::line("train", &item, &self.train);
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        Self::line("valid", &item, &self.valid);
    }
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}

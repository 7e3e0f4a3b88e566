//! The bit schedule: MoQ's per-layer state machine (the guide's algorithm page (docs/algorithm.md), "Schedule").
//!
//! Optimizer steps are numbered from 0. Steps before `schedule_offset` are not quantized; from
//! then on a counter `q` counts quantizing steps (1, 2, 3, …). Each layer has `bits` (starting
//! at `start_bits`) and a threshold `T` (starting at its period). At every quantizing step,
//! before quantizing: if `bits > target_bits` and `q >= T`, then `bits -= 1` and
//! `T = T · 2 · factor`, with `factor = 1 + floor(4e)` for the layer's normalized eigenvalue
//! `e` (1 when eigenvalues are off). Mixing's full-precision share `ρ` drops by the change
//! ratio every quantizing step and is reset to 1 at every drop of that layer.
//!
//! With a deadline (`moq.deadline`, optimizer step `T`; `D = T − schedule_offset + 1`
//! quantizing steps), the thresholds come from [`deadline_threshold`] instead: a layer of
//! factor `f` runs the doubling schedule inside the window `[S, D]`, `S = ⌊D·(f−1)/f⌋`
//! ([`deadline_window`]: the whole run for `f = 1`, its last fifth for `f = 5`), so sensitive
//! layers drop later, and every layer is at its target by step `T` whatever the factors.
//!
//! ```
//! use moq_core::{QuantizeConfig, Schedule};
//! let cfg = QuantizeConfig::builder().bits(12, 8).period(10).schedule_offset(0).build().unwrap();
//! let mut schedule = Schedule::new(&cfg, 1).unwrap();
//! let mut drops = Vec::new();
//! for step in 0..100 {
//!     if !schedule.step().drops.is_empty() {
//!         drops.push(step);
//!     }
//! }
//! assert_eq!(drops, [9, 19, 39, 79]);
//! assert_eq!(schedule.bits(0), Some(8));
//! ```
//!
//! The whole [`Schedule`] is serde-serialisable: saving and loading it between two steps
//! continues the run bit for bit.

use serde::{Deserialize, Serialize};

use crate::config::QuantizeConfig;
use crate::error::{MoqError, Result};

mod deadline;
mod layer;
mod saved;

pub use deadline::{deadline_threshold, deadline_window, eigen_factor};
pub use layer::{BitDrop, LayerSpec, LayerState, StepReport};
use saved::{ScheduleState, check_eigenvalues};

/// The per-layer bit schedule of one run. Deserializing checks the state (a checkpoint is user
/// input): layer counts must agree and every layer must be a valid schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScheduleState")]
pub struct Schedule {
    specs: Vec<LayerSpec>,
    schedule_offset: u64,
    /// `Some(change_ratio)` when mixing is on.
    mixing: Option<f64>,
    /// Optimizer steps taken so far (the index of the next step).
    step: u64,
    /// Quantizing steps taken so far (`q`).
    quantizing_steps: u64,
    layers: Vec<LayerState>,
    /// Normalized eigenvalue per layer, when eigenvalues are in use.
    eigenvalues: Option<Vec<f32>>,
    /// With a deadline: the quantizing step (`D`, counted from 1) by which every layer is at
    /// its target.
    #[serde(rename = "deadline")]
    quantizing_deadline: Option<u64>,
    /// The deadline as given: the optimizer step `T` (`D = T − offset + 1`, saturated at
    /// `u64::MAX`, so `T` itself is kept to be given back as it was set).
    #[serde(rename = "deadline_step")]
    deadline: Option<u64>,
}

impl Schedule {
    /// The most layers a schedule holds (checked before anything is allocated).
    pub const MAX_LAYERS: usize = 1 << 16;

    /// A schedule of `layers` layers that all follow the config.
    pub fn new(config: &QuantizeConfig, layers: usize) -> Result<Self> {
        Self::check_layers(layers)?;
        Self::with_layers(config, vec![LayerSpec::from_config(config); layers])
    }

    fn check_layers(layers: usize) -> Result<()> {
        if layers > Self::MAX_LAYERS {
            return Err(MoqError::Schedule {
                reason: format!(
                    "{layers} layers (a schedule holds at most {})",
                    Self::MAX_LAYERS
                ),
            });
        }
        Ok(())
    }

    /// A schedule whose layers have their own start/target bits and period (DeepSpeed's
    /// `different_groups`); offset and mixing come from the config.
    pub fn with_layers(config: &QuantizeConfig, specs: Vec<LayerSpec>) -> Result<Self> {
        config.validate()?;
        Self::check_layers(specs.len())?;
        if specs.is_empty() {
            return Err(MoqError::Schedule {
                reason: "a schedule needs at least one layer".into(),
            });
        }
        for (layer, spec) in specs.iter().enumerate() {
            spec.validate(layer)?;
        }
        // `validate` checked the config's widths; layers given their own must fit too.
        let quantizing_deadline = config
            .deadline
            .map(|t| (t - config.schedule_offset).saturating_add(1));
        let layers = specs
            .iter()
            .map(|s| LayerState {
                bits: s.start_bits,
                threshold: s.period,
                steps_since_drop: 0,
                window_start: 0,
            })
            .collect();
        let mut schedule = Self {
            specs,
            schedule_offset: config.schedule_offset,
            mixing: config.mixing.enabled.then_some(config.mixing.change_ratio),
            step: 0,
            quantizing_steps: 0,
            layers,
            eigenvalues: None,
            quantizing_deadline,
            deadline: config.deadline,
        };
        schedule.check_deadline()?;
        schedule.replan();
        Ok(schedule)
    }

    /// With a deadline, every layer's drops must fit before it, one per quantizing step.
    fn check_deadline(&self) -> Result<()> {
        let Some(d) = self.quantizing_deadline else {
            return Ok(());
        };
        for (layer, (spec, state)) in self.specs.iter().zip(&self.layers).enumerate() {
            let left = u64::from(state.bits - spec.target_bits);
            if left > d - self.quantizing_steps.min(d) {
                return Err(MoqError::Schedule {
                    reason: format!(
                        "layer {layer}: {left} drops ({} → {} bits) do not fit in the {} \
                         quantizing steps before the deadline, one drop per step at most",
                        state.bits,
                        spec.target_bits,
                        d - self.quantizing_steps.min(d)
                    ),
                });
            }
        }
        Ok(())
    }

    /// With a deadline, places every layer's next drop from its factor now (targets and
    /// eigenvalues decide it); a no-op without one. A layer follows its factor's window while
    /// that window's next drop is still ahead. One that has fallen behind it (its factor fell)
    /// stays in the window it is in if that one has begun and its next drop is ahead, or else
    /// starts a new window now: the drops it owes are spread, doubling, over the time left
    /// instead of coming one per step.
    fn replan(&mut self) {
        let Some(d) = self.quantizing_deadline else {
            return;
        };
        let q = self.quantizing_steps;
        for (layer, (state, spec)) in self.layers.iter_mut().zip(&self.specs).enumerate() {
            if state.bits <= spec.target_bits {
                continue;
            }
            let left = state.bits - spec.target_bits;
            let factor = eigen_factor(self.eigenvalues.as_ref().map(|e| e[layer]));
            let window = deadline_window(d, factor);
            // Whether the window's next drop, as planned from its start, is still to come.
            let ahead = |start: u64| deadline_threshold(d, start, 0, left) > q;
            state.window_start = if ahead(window) {
                window
            } else if state.window_start <= q && ahead(state.window_start) {
                // Already inside a window whose next drop is still to come.
                state.window_start
            } else {
                q
            };
            state.threshold = deadline_threshold(d, state.window_start, q, left);
        }
    }

    /// Advances one optimizer step and reports whether it quantizes and which layers dropped.
    /// Call it once per optimizer step that was taken, before quantizing that step's weights.
    pub fn step(&mut self) -> StepReport {
        let step = self.step;
        self.step += 1;
        if step < self.schedule_offset {
            return StepReport {
                step,
                quantize: false,
                drops: Vec::new(),
            };
        }
        self.quantizing_steps += 1;
        let q = self.quantizing_steps;
        let mut drops = Vec::new();
        for (layer, (state, spec)) in self.layers.iter_mut().zip(&self.specs).enumerate() {
            state.steps_since_drop += 1;
            if state.bits > spec.target_bits && q >= state.threshold {
                let factor = eigen_factor(self.eigenvalues.as_ref().map(|e| e[layer]));
                state.threshold = match self.quantizing_deadline {
                    Some(d) if state.bits - 1 > spec.target_bits => deadline_threshold(
                        d,
                        state.window_start,
                        q,
                        state.bits - 1 - spec.target_bits,
                    ),
                    Some(_) => state.threshold,
                    None => state.threshold.saturating_mul(2 * factor),
                };
                state.bits -= 1;
                state.steps_since_drop = 0;
                drops.push(BitDrop {
                    layer,
                    from: state.bits + 1,
                    to: state.bits,
                });
            }
        }
        StepReport {
            step,
            quantize: true,
            drops,
        }
    }

    /// Bits layer `layer` is quantized at now; `None` before the first quantizing step or for
    /// a layer that does not exist.
    pub fn bits(&self, layer: usize) -> Option<u32> {
        (self.quantizing_steps > 0)
            .then(|| self.layers.get(layer).map(|s| s.bits))
            .flatten()
    }

    /// The full-precision share `ρ` of the weight `ρ·w + (1−ρ)·Q(w)` for `layer`: 0 when mixing
    /// is off, else `max(0, 1 − k·change_ratio)` with `k` quantizing steps since the last drop.
    pub fn mix_ratio(&self, layer: usize) -> f32 {
        match (self.mixing, self.layers.get(layer)) {
            (Some(ratio), Some(state)) => {
                (1.0 - state.steps_since_drop as f64 * ratio).max(0.0) as f32
            }
            _ => 0.0,
        }
    }

    /// Every layer at its spec's start width: where it is before the first quantizing step.
    fn reset_to_start(&mut self) {
        for (state, spec) in self.layers.iter_mut().zip(&self.specs) {
            state.bits = spec.start_bits;
        }
    }

    /// Sets every layer's target width (second-order bit allocation), before the first
    /// quantizing step only. A layer with a schedule (start above target: MoQ) keeps its
    /// start, and its new target must be between 1 and that start. A layer without one
    /// (start = target: basic QAT) trains at its new width from its first quantizing step:
    /// its start moves with its target, above or below (1 to 16 bits). Which of the two a
    /// layer is, is read from its spec at the call.
    pub fn set_targets(&mut self, targets: &[u32]) -> Result<()> {
        if targets.len() != self.specs.len() {
            return Err(MoqError::Schedule {
                reason: format!(
                    "{} targets given for {} layers",
                    targets.len(),
                    self.specs.len()
                ),
            });
        }
        if self.quantizing_steps > 0 {
            return Err(MoqError::Schedule {
                reason: format!(
                    "targets can only be set before the first quantizing step ({} taken)",
                    self.quantizing_steps
                ),
            });
        }
        let specs: Vec<LayerSpec> = self
            .specs
            .iter()
            .zip(targets)
            .map(|(s, &target_bits)| LayerSpec {
                start_bits: if s.has_schedule() {
                    s.start_bits
                } else {
                    target_bits
                },
                target_bits,
                ..*s
            })
            .collect();
        for (layer, spec) in specs.iter().enumerate() {
            spec.validate(layer)?;
        }
        let before = std::mem::replace(&mut self.specs, specs);
        self.reset_to_start();
        if let Err(e) = self.check_deadline() {
            self.specs = before;
            self.reset_to_start();
            return Err(e);
        }
        self.replan();
        Ok(())
    }

    /// Sets the normalized eigenvalue `e ∈ [0, 1]` of every layer, as the factor
    /// `1 + floor(4e)`: it applies at that layer's next drop, or, with a deadline, at once
    /// (each layer's next drop is placed again in its factor's window).
    pub fn set_eigenvalues(&mut self, eigenvalues: &[f32]) -> Result<()> {
        check_eigenvalues(eigenvalues, self.layers.len())?;
        self.eigenvalues = Some(eigenvalues.to_vec());
        self.replan();
        Ok(())
    }

    /// Turns the eigenvalue factor off again (factor 1 for every layer).
    pub fn clear_eigenvalues(&mut self) {
        self.eigenvalues = None;
        self.replan();
    }

    /// With a deadline, the optimizer step by which every layer is at its target.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// With a deadline, the quantizing step `D` (counted from 1) by which every layer is at its
    /// target: `T − schedule_offset + 1`, saturated at `u64::MAX`.
    pub fn deadline_quantizing_step(&self) -> Option<u64> {
        self.quantizing_deadline
    }

    /// The normalized eigenvalues in use, if any.
    pub fn eigenvalues(&self) -> Option<&[f32]> {
        self.eigenvalues.as_deref()
    }

    /// Whether some layer is still above its target: DeepSpeed recomputes eigenvalues only then.
    pub fn needs_eigenvalues(&self) -> bool {
        self.layers
            .iter()
            .zip(&self.specs)
            .any(|(s, spec)| s.bits > spec.target_bits)
    }

    /// Whether some layer will lose a bit during the next `steps` optimizer steps. Eigenvalues
    /// only matter at a drop (they set the period that follows it), so a provider asked only
    /// when this holds for the steps until its next chance gives the same schedule as one asked
    /// at every chance.
    pub fn drops_within(&self, steps: u64) -> bool {
        let end = self.step.saturating_add(steps);
        let quantizing = end.saturating_sub(self.step.max(self.schedule_offset));
        let q = self.quantizing_steps + quantizing;
        self.layers
            .iter()
            .zip(&self.specs)
            .any(|(s, spec)| s.bits > spec.target_bits && s.threshold <= q)
    }

    /// Optimizer steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Quantizing steps taken so far.
    pub fn quantizing_steps(&self) -> u64 {
        self.quantizing_steps
    }

    /// Optimizer steps before quantization starts.
    pub fn schedule_offset(&self) -> u64 {
        self.schedule_offset
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Each layer's start/target/period.
    pub fn specs(&self) -> &[LayerSpec] {
        &self.specs
    }

    /// Each layer's current state.
    pub fn layers(&self) -> &[LayerState] {
        &self.layers
    }
}

#[cfg(test)]
mod tests;

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
mod tests {
    use super::*;
    use crate::config::QuantizeConfig;

    fn cfg(start: u32, target: u32, period: u64, offset: u64) -> QuantizeConfig {
        QuantizeConfig::builder()
            .bits(start, target)
            .period(period)
            .schedule_offset(offset)
            .build()
            .unwrap()
    }

    fn drop_steps(schedule: &mut Schedule, steps: u64) -> Vec<(u64, usize, u32)> {
        let mut out = Vec::new();
        for _ in 0..steps {
            let r = schedule.step();
            out.extend(r.drops.iter().map(|d| (r.step, d.layer, d.to)));
        }
        out
    }

    #[test]
    fn targets_are_set_before_quantizing_only() {
        let config = QuantizeConfig::builder()
            .bits(8, 4)
            .period(2)
            .schedule_offset(1)
            .build()
            .unwrap();
        let mut s = Schedule::new(&config, 2).unwrap();
        assert!(s.set_targets(&[3]).is_err());
        assert!(s.set_targets(&[9, 4]).is_err(), "above the start width");
        s.set_targets(&[6, 2]).unwrap();
        for _ in 0..200 {
            s.step();
        }
        assert_eq!((s.bits(0), s.bits(1)), (Some(6), Some(2)));
        let e = s.set_targets(&[5, 5]).unwrap_err().to_string();
        assert!(e.contains("before the first quantizing step"), "{e}");
    }

    #[test]
    fn a_layer_without_a_schedule_trains_at_its_new_target() {
        // Basic QAT (start = target = 3): each layer's start moves with its target, above or
        // below; a scheduled layer (MoQ, 8 → 3) keeps its start and may not go above it.
        let config = QuantizeConfig::builder()
            .bits(3, 3)
            .period(2)
            .schedule_offset(1)
            .build()
            .unwrap();
        let mut s = Schedule::new(&config, 3).unwrap();
        s.set_targets(&[4, 2, 3]).unwrap();
        let widths: Vec<(u32, u32)> = s
            .specs()
            .iter()
            .map(|l| (l.start_bits, l.target_bits))
            .collect();
        assert_eq!(widths, [(4, 4), (2, 2), (3, 3)]);
        s.step();
        assert_eq!(s.bits(0), None, "the warm-up step does not quantize");
        s.step();
        assert_eq!(
            (s.bits(0), s.bits(1), s.bits(2)),
            (Some(4), Some(2), Some(3))
        );
        for _ in 0..50 {
            let report = s.step();
            assert!(report.drops.is_empty(), "{report:?}");
        }
        let mut moq = Schedule::new(&cfg(8, 3, 2, 0), 2).unwrap();
        let e = moq.set_targets(&[4, 9]).unwrap_err().to_string();
        assert!(e.contains("layer 1"), "{e}");
        moq.set_targets(&[4, 8]).unwrap();
        assert_eq!(moq.specs()[0].start_bits, 8);
        moq.step();
        assert_eq!((moq.bits(0), moq.bits(1)), (Some(8), Some(8)));
    }

    #[test]
    fn hand_computed_drops() {
        let mut s = Schedule::new(&cfg(12, 8, 10, 0), 1).unwrap();
        assert_eq!(s.bits(0), None);
        assert_eq!(
            drop_steps(&mut s, 200),
            [(9, 0, 11), (19, 0, 10), (39, 0, 9), (79, 0, 8)]
        );
        assert!(!s.needs_eigenvalues());
    }

    #[test]
    fn offset_delays_quantization() {
        // Offset 5: steps 0..4 are not quantized, q = 1 at step 5, drops at q = 3, 6.
        let mut s = Schedule::new(&cfg(8, 6, 3, 5), 2).unwrap();
        for step in 0..5 {
            let r = s.step();
            assert!(!r.quantize, "step {step}");
            assert_eq!(s.bits(0), None);
        }
        assert!(s.step().quantize);
        assert_eq!(s.bits(1), Some(8));
        assert_eq!(
            drop_steps(&mut s, 100),
            [(7, 0, 7), (7, 1, 7), (10, 0, 6), (10, 1, 6)]
        );
    }

    #[test]
    fn eigen_factor_stretches_the_period() {
        // e = 0.6 → factor 3: drops at q = 4, 4·6 = 24, 24·6 = 144.
        let mut s = Schedule::new(&cfg(10, 7, 4, 0), 2).unwrap();
        s.set_eigenvalues(&[0.6, 0.0]).unwrap();
        let drops = drop_steps(&mut s, 200);
        let layer0: Vec<u64> = drops.iter().filter(|d| d.1 == 0).map(|d| d.0).collect();
        let layer1: Vec<u64> = drops.iter().filter(|d| d.1 == 1).map(|d| d.0).collect();
        assert_eq!(layer0, [3, 23, 143]);
        assert_eq!(layer1, [3, 7, 15]);
        assert_eq!(eigen_factor(Some(1.0)), 5);
        assert_eq!(eigen_factor(Some(0.24)), 1);
        assert_eq!(eigen_factor(Some(0.25)), 2);
        assert!(s.set_eigenvalues(&[0.5]).is_err());
        assert!(s.set_eigenvalues(&[0.5, 1.5]).is_err());
        assert!(s.set_eigenvalues(&[0.5, f32::NAN]).is_err());
    }

    #[test]
    fn drops_within_predicts_the_next_drops() {
        for (offset, window) in [(0, 1), (0, 3), (5, 1), (5, 4), (7, 10)] {
            let mut schedule = Schedule::new(&cfg(12, 8, 3, offset), 2).unwrap();
            for _ in 0..200 {
                let mut ahead = schedule.clone();
                let predicted = schedule.drops_within(window);
                let actual = (0..window).any(|_| !ahead.step().drops.is_empty());
                assert_eq!(
                    predicted,
                    actual,
                    "offset {offset}, window {window}, step {}",
                    schedule.steps_taken()
                );
                schedule.step();
            }
        }
    }

    #[test]
    fn mixing_ratio_falls_and_resets_at_drops() {
        let config = QuantizeConfig::builder()
            .bits(9, 8)
            .period(4)
            .schedule_offset(1)
            .mixing(0.25)
            .build()
            .unwrap();
        let mut s = Schedule::new(&config, 1).unwrap();
        let mut ratios = Vec::new();
        for _ in 0..9 {
            s.step();
            ratios.push(s.mix_ratio(0));
        }
        // Step 0 is before the offset; q = 1, 2, 3 lower ρ; q = 4 drops (ρ = 1); then lower again.
        assert_eq!(ratios, [1.0, 0.75, 0.5, 0.25, 1.0, 0.75, 0.5, 0.25, 0.0]);
        let no_mix = Schedule::new(&cfg(9, 8, 4, 0), 1).unwrap();
        assert_eq!(no_mix.mix_ratio(0), 0.0);
    }

    #[test]
    fn per_layer_specs() {
        let config = cfg(12, 8, 10, 0);
        let specs = vec![
            LayerSpec {
                start_bits: 12,
                target_bits: 8,
                period: 10,
            },
            LayerSpec {
                start_bits: 8,
                target_bits: 4,
                period: 2,
            },
            LayerSpec {
                start_bits: 8,
                target_bits: 8,
                period: 2,
            },
        ];
        let mut s = Schedule::with_layers(&config, specs).unwrap();
        s.step();
        assert_eq!(
            (s.bits(0), s.bits(1), s.bits(2), s.bits(3)),
            (Some(12), Some(8), Some(8), None)
        );
        drop_steps(&mut s, 100);
        assert_eq!(
            (s.bits(0), s.bits(1), s.bits(2)),
            (Some(8), Some(4), Some(8))
        );
        let bad = vec![LayerSpec {
            start_bits: 4,
            target_bits: 8,
            period: 2,
        }];
        assert!(Schedule::with_layers(&config, bad).is_err());
        assert!(Schedule::new(&config, 0).is_err());
    }

    #[test]
    fn serialized_state_resumes_bit_for_bit() {
        let config = QuantizeConfig::builder()
            .bits(14, 4)
            .period(3)
            .schedule_offset(2)
            .mixing(0.01)
            .build()
            .unwrap();
        let mut straight = Schedule::new(&config, 3).unwrap();
        straight.set_eigenvalues(&[0.1, 0.5, 0.9]).unwrap();
        let mut resumed = straight.clone();
        let a = drop_steps(&mut straight, 500);
        let mut b = drop_steps(&mut resumed, 237);
        let text = serde_json::to_string(&resumed).unwrap();
        let mut resumed: Schedule = serde_json::from_str(&text).unwrap();
        b.extend(drop_steps(&mut resumed, 263));
        assert_eq!(a, b);
        assert_eq!(straight, resumed);
    }

    #[test]
    fn corrupt_saved_state_is_an_error() {
        let s = Schedule::new(&cfg(12, 8, 10, 0), 2).unwrap();
        let mut v = serde_json::to_value(&s).unwrap();
        v["eigenvalues"] = serde_json::json!([0.5]);
        let err = serde_json::from_value::<Schedule>(v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 eigenvalues given for 2 layers"), "{err}");
        let mut v = serde_json::to_value(&s).unwrap();
        v["layers"][1]["bits"] = serde_json::json!(3);
        let err = serde_json::from_value::<Schedule>(v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 1 is at 3 bits"), "{err}");
        let mut v = serde_json::to_value(&s).unwrap();
        v["specs"] = serde_json::json!([]);
        assert!(serde_json::from_value::<Schedule>(v).is_err());
    }

    fn deadline_cfg(start: u32, target: u32, offset: u64, deadline: u64) -> QuantizeConfig {
        QuantizeConfig::builder()
            .bits(start, target)
            .schedule_offset(offset)
            .deadline(deadline)
            .build()
            .unwrap()
    }

    #[test]
    fn the_deadline_is_given_back_as_it_was_set() {
        // u64::MAX from step 0 is u64::MAX + 1 quantizing steps, saturated: the step itself is
        // kept, in the schedule and in its saved state.
        for (offset, deadline) in [(0, u64::MAX), (7, u64::MAX), (5, 84), (0, 0)] {
            let s = Schedule::new(&deadline_cfg(8, 8, offset, deadline), 1).unwrap();
            assert_eq!(s.deadline(), Some(deadline), "offset {offset}");
            let back: Schedule = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
            assert_eq!(back.deadline(), Some(deadline));
        }
        // A state saved before the step was kept: derived from the quantizing step, as then.
        let s = Schedule::new(&deadline_cfg(12, 8, 5, 84), 1).unwrap();
        let mut v = serde_json::to_value(&s).unwrap();
        v.as_object_mut().unwrap().remove("deadline_step");
        let old: Schedule = serde_json::from_value(v).unwrap();
        assert_eq!(old.deadline(), Some(84));
        assert_eq!(old, s);
    }

    #[test]
    fn a_deadline_places_the_doubling_schedule_before_it() {
        // 12 → 8 by optimizer step 84, quantizing from step 5: D = 80 quantizing steps.
        let mut s = Schedule::new(&deadline_cfg(12, 8, 5, 84), 2).unwrap();
        assert_eq!(s.deadline(), Some(84));
        // Layer 1 as sensitive as can be (factor 5): its drops in the last fifth.
        s.set_eigenvalues(&[0.0, 1.0]).unwrap();
        let drops = drop_steps(&mut s, 200);
        let of =
            |layer| -> Vec<u64> { drops.iter().filter(|d| d.1 == layer).map(|d| d.0).collect() };
        // Quantizing step q is optimizer step q + 4.
        assert_eq!(of(0), [14, 24, 44, 84]);
        assert_eq!(of(1), [70, 72, 76, 84]);
        assert_eq!((s.bits(0), s.bits(1)), (Some(8), Some(8)));
    }

    #[test]
    fn a_deadline_holds_when_targets_and_factors_change() {
        let mut s = Schedule::new(&deadline_cfg(16, 8, 0, 99), 3).unwrap();
        // A lower target for one layer (auto_bits): its eight more drops fit too.
        s.set_targets(&[8, 2, 8]).unwrap();
        assert!(s.set_targets(&[8, 8, 8]).is_ok());
        s.set_targets(&[8, 2, 8]).unwrap();
        for step in 0..=99u64 {
            if step % 17 == 3 {
                let e = (step as f32 / 99.0).min(1.0);
                s.set_eigenvalues(&[e, 1.0 - e, 0.5]).unwrap();
            }
            s.step();
        }
        assert_eq!(
            (s.bits(0), s.bits(1), s.bits(2)),
            (Some(8), Some(2), Some(8))
        );
        // Too many drops for the steps left: refused, nothing changed.
        let mut s = Schedule::new(&deadline_cfg(16, 12, 0, 9), 1).unwrap();
        let err = s.set_targets(&[1]).unwrap_err().to_string();
        assert!(
            err.contains("15 drops") && err.contains("10 quantizing steps"),
            "{err}"
        );
        assert_eq!(s.specs()[0].target_bits, 12);
    }

    #[test]
    fn a_layer_whose_factor_falls_catches_up_over_the_time_left() {
        // 12 → 8 by quantizing step 600: the most sensitive factor first (window [480, 600]).
        let mut s = Schedule::new(&deadline_cfg(12, 8, 0, 599), 1).unwrap();
        s.set_eigenvalues(&[1.0]).unwrap();
        let mut drops = drop_steps(&mut s, 450);
        assert!(drops.is_empty());
        // Judged insensitive now: its plain plan (75, 150, 300, 600) is mostly past. It owes
        // three drops and spreads them, doubling, from now (450) to the deadline.
        s.set_eigenvalues(&[0.0]).unwrap();
        drops.extend(drop_steps(&mut s, 200));
        let steps: Vec<u64> = drops.iter().map(|d| d.0).collect();
        assert_eq!(steps, [468, 487, 524, 599]);
        // The next computation, the factor unchanged: the catch-up window stays.
        let mut s = Schedule::new(&deadline_cfg(12, 8, 0, 599), 1).unwrap();
        s.set_eigenvalues(&[1.0]).unwrap();
        drop_steps(&mut s, 450);
        s.set_eigenvalues(&[0.0]).unwrap();
        let mut again = drop_steps(&mut s, 30);
        s.set_eigenvalues(&[0.0]).unwrap();
        again.extend(drop_steps(&mut s, 170));
        assert_eq!(again, drops);
    }

    #[test]
    fn a_saved_deadline_schedule_is_checked_and_resumes() {
        let mut s = Schedule::new(&deadline_cfg(12, 4, 2, 300), 2).unwrap();
        s.set_eigenvalues(&[0.3, 0.8]).unwrap();
        let mut straight = s.clone();
        let a = drop_steps(&mut straight, 320);
        let mut b = drop_steps(&mut s, 150);
        let text = serde_json::to_string(&s).unwrap();
        let mut resumed: Schedule = serde_json::from_str(&text).unwrap();
        b.extend(drop_steps(&mut resumed, 170));
        assert_eq!(a, b);
        let mut v = serde_json::to_value(&resumed).unwrap();
        v["step"] = serde_json::json!(150);
        v["quantizing_steps"] = serde_json::json!(148);
        v["layers"][0]["bits"] = serde_json::json!(12);
        v["layers"][0]["threshold"] = serde_json::json!(296);
        let err = serde_json::from_value::<Schedule>(v)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit the deadline"), "{err}");
    }

    proptest::proptest! {
        /// Whatever the factors and whenever they change, every layer is at its target after
        /// the deadline's step, never below it, and never drops before quantization starts.
        #[test]
        fn deadline_schedules_reach_every_target_by_the_deadline(
            widths in proptest::collection::vec((1u32..=16, 0u32..=15), 1..6),
            offset in 0u64..30,
            // Tight deadlines most of all: a window shorter than the drops left is the hard case.
            slack in proptest::prop_oneof![0u64..4, 0u64..300],
            updates in proptest::collection::vec(
                (0.0f64..1.0, proptest::collection::vec(0.0f32..=1.0, 6)), 0..6),
        ) {
            let specs: Vec<LayerSpec> = widths
                .iter()
                .map(|&(start, drops)| LayerSpec {
                    start_bits: start,
                    target_bits: start.saturating_sub(drops).max(1),
                    period: 1,
                })
                .collect();
            let most = specs.iter().map(|s| s.start_bits - s.target_bits).max().unwrap();
            // The tightest deadline that fits is `most` quantizing steps.
            let deadline = offset + u64::from(most.max(1)) - 1 + slack;
            let config = QuantizeConfig::builder().bits(16, 16).schedule_offset(offset)
                .deadline(deadline).build().unwrap();
            let mut s = Schedule::with_layers(&config, specs.clone()).unwrap();
            for step in 0..=deadline + 3 {
                for (at, e) in &updates {
                    if (at * (deadline + 1) as f64) as u64 == step {
                        s.set_eigenvalues(&e[..specs.len()]).unwrap();
                    }
                }
                let r = s.step();
                proptest::prop_assert!(r.drops.is_empty() || step >= offset);
                for (layer, spec) in specs.iter().enumerate() {
                    let bits = s.bits(layer).unwrap_or(spec.start_bits);
                    proptest::prop_assert!(bits >= spec.target_bits);
                    if step >= deadline {
                        proptest::prop_assert_eq!(bits, spec.target_bits, "layer {} at step {}", layer, step);
                    }
                }
            }
        }

        /// Of two layers with the same widths, the more sensitive one (the larger factor)
        /// reaches no width earlier than the other.
        #[test]
        fn sensitive_layers_drop_later(
            start in 2u32..=16, drops in 1u32..=15, offset in 0u64..20, slack in 0u64..500,
            e in proptest::collection::vec(0.0f32..=1.0, 2),
        ) {
            let target = start.saturating_sub(drops).max(1);
            let deadline = offset + u64::from(start - target) - 1 + slack;
            let mut s = Schedule::new(&deadline_cfg(start, target, offset, deadline), 2).unwrap();
            s.set_eigenvalues(&e).unwrap();
            let (sensitive, other) = if eigen_factor(Some(e[0])) >= eigen_factor(Some(e[1])) { (0, 1) } else { (1, 0) };
            for _ in 0..=deadline {
                s.step();
                proptest::prop_assert!(s.bits(sensitive) >= s.bits(other));
            }
        }
    }
}

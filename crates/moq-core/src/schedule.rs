//! The bit schedule: MoQ's per-layer state machine (DESIGN.md section 3, "Schedule").
//!
//! Optimizer steps are numbered from 0. Steps before `schedule_offset` are not quantized; from
//! then on a counter `q` counts quantizing steps (1, 2, 3, …). Each layer has `bits` (starting
//! at `start_bits`) and a threshold `T` (starting at its period). At every quantizing step,
//! before quantizing: if `bits > target_bits` and `q >= T`, then `bits -= 1` and
//! `T = T · 2 · factor`, with `factor = 1 + floor(4e)` for the layer's normalized eigenvalue
//! `e` (1 when eigenvalues are off). Mixing's full-precision share `ρ` drops by the change
//! ratio every quantizing step and is reset to 1 at every drop of that layer.
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

use crate::config::{MAX_BITS, QuantizeConfig};
use crate::error::{MoqError, Result};

/// Where one layer's schedule starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSpec {
    /// Bits at the first quantizing step.
    pub start_bits: u32,
    /// Bits the schedule stops at.
    pub target_bits: u32,
    /// Quantizing steps before the first drop.
    pub period: u64,
}

impl LayerSpec {
    /// The spec every layer gets from a config.
    pub fn from_config(config: &QuantizeConfig) -> Self {
        Self {
            start_bits: config.start_bits,
            target_bits: config.target_bits,
            period: config.period,
        }
    }

    fn validate(&self, layer: usize) -> Result<()> {
        let ok = (1..=MAX_BITS).contains(&self.start_bits)
            && (1..=self.start_bits).contains(&self.target_bits)
            && self.period > 0;
        if ok {
            Ok(())
        } else {
            Err(MoqError::Schedule {
                reason: format!(
                    "layer {layer}: start_bits {} / target_bits {} / period {} is not a valid \
                     schedule (need 1 ≤ target ≤ start ≤ 16 and period ≥ 1)",
                    self.start_bits, self.target_bits, self.period
                ),
            })
        }
    }
}

/// One layer's evolving state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerState {
    /// Current bit width.
    pub bits: u32,
    /// Quantizing-step count at which the next drop happens (`T`).
    pub threshold: u64,
    /// Quantizing steps since the last drop (or since the start): drives the mixing ratio.
    pub steps_since_drop: u64,
}

/// A layer that lost a bit at this step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitDrop {
    /// Layer index.
    pub layer: usize,
    /// Bits before the drop.
    pub from: u32,
    /// Bits after the drop.
    pub to: u32,
}

/// What happened at one optimizer step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    /// The optimizer step (numbered from 0).
    pub step: u64,
    /// Whether this step quantizes (it is at or past `schedule_offset`).
    pub quantize: bool,
    /// Layers whose bits dropped at this step.
    pub drops: Vec<BitDrop>,
}

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
}

/// The serialized form of a [`Schedule`], checked on the way in.
#[derive(Deserialize)]
struct ScheduleState {
    specs: Vec<LayerSpec>,
    schedule_offset: u64,
    mixing: Option<f64>,
    step: u64,
    quantizing_steps: u64,
    layers: Vec<LayerState>,
    eigenvalues: Option<Vec<f32>>,
}

impl TryFrom<ScheduleState> for Schedule {
    type Error = MoqError;

    fn try_from(s: ScheduleState) -> Result<Self> {
        let bad = |reason: String| {
            Err(MoqError::Schedule {
                reason: format!("saved state: {reason}"),
            })
        };
        if s.specs.is_empty() || s.specs.len() != s.layers.len() {
            return bad(format!(
                "{} layer specs for {} layer states",
                s.specs.len(),
                s.layers.len()
            ));
        }
        for (layer, (spec, state)) in s.specs.iter().zip(&s.layers).enumerate() {
            spec.validate(layer)?;
            if !(spec.target_bits..=spec.start_bits).contains(&state.bits) {
                return bad(format!(
                    "layer {layer} is at {} bits, outside its schedule",
                    state.bits
                ));
            }
        }
        if s.quantizing_steps > s.step {
            return bad(format!(
                "{} quantizing steps in {} steps",
                s.quantizing_steps, s.step
            ));
        }
        if s.mixing.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
            return bad("mixing change ratio outside (0, 1]".into());
        }
        let mut schedule = Schedule {
            specs: s.specs,
            schedule_offset: s.schedule_offset,
            mixing: s.mixing,
            step: s.step,
            quantizing_steps: s.quantizing_steps,
            layers: s.layers,
            eigenvalues: None,
        };
        if let Some(e) = s.eigenvalues {
            schedule.set_eigenvalues(&e)?;
        }
        Ok(schedule)
    }
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
        let layers = specs
            .iter()
            .map(|s| LayerState {
                bits: s.start_bits,
                threshold: s.period,
                steps_since_drop: 0,
            })
            .collect();
        Ok(Self {
            specs,
            schedule_offset: config.schedule_offset,
            mixing: config.mixing.enabled.then_some(config.mixing.change_ratio),
            step: 0,
            quantizing_steps: 0,
            layers,
            eigenvalues: None,
        })
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
                state.threshold = state.threshold.saturating_mul(2 * factor);
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

    /// Sets every layer's target width (second-order bit allocation), before the first
    /// quantizing step only: each must be between 1 and the layer's start width.
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
            .map(|(s, &target_bits)| LayerSpec { target_bits, ..*s })
            .collect();
        for (layer, spec) in specs.iter().enumerate() {
            spec.validate(layer)?;
        }
        self.specs = specs;
        Ok(())
    }

    /// Sets the normalized eigenvalue `e ∈ [0, 1]` of every layer; each applies at that layer's
    /// next drop, as the factor `1 + floor(4e)`.
    pub fn set_eigenvalues(&mut self, eigenvalues: &[f32]) -> Result<()> {
        if eigenvalues.len() != self.layers.len() {
            return Err(MoqError::Schedule {
                reason: format!(
                    "{} eigenvalues given for {} layers",
                    eigenvalues.len(),
                    self.layers.len()
                ),
            });
        }
        if let Some((layer, e)) = eigenvalues
            .iter()
            .enumerate()
            .find(|(_, e)| !(0.0..=1.0).contains(*e))
        {
            return Err(MoqError::Schedule {
                reason: format!("layer {layer}: normalized eigenvalue {e} is not in [0, 1]"),
            });
        }
        self.eigenvalues = Some(eigenvalues.to_vec());
        Ok(())
    }

    /// Turns the eigenvalue factor off again (factor 1 for every layer).
    pub fn clear_eigenvalues(&mut self) {
        self.eigenvalues = None;
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

/// `1 + floor(4e)`, or 1 without an eigenvalue.
pub fn eigen_factor(eigenvalue: Option<f32>) -> u64 {
    match eigenvalue {
        Some(e) => 1 + (4.0 * e.clamp(0.0, 1.0)).floor() as u64,
        None => 1,
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
}

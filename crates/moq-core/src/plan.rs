//! The planner: when does each layer reach each bit width, is the target reached within the
//! planned number of steps, and what is the largest period that would reach it.
//!
//! With a fixed eigenvalue factor `f`, the schedule of docs/algorithm.md drops the `k`-th bit
//! at quantizing step `q_k = period · (2f)^(k−1)`, that is at optimizer step
//! `schedule_offset + q_k − 1`. The planner uses this closed form, so it answers at once for
//! any number of steps; a test checks it against the state machine step by step. With a
//! deadline the drops are [`deadline_threshold`]'s, one call per drop.
//!
//! ```
//! use moq_core::{QuantizeConfig, Schedule, plan};
//! let cfg = QuantizeConfig::builder().bits(16, 4).period(100).schedule_offset(0).build().unwrap();
//! let p = plan(&Schedule::new(&cfg, 1).unwrap(), 10_000);
//! let layer = &p.layers[0];
//! assert_eq!(layer.final_bits(), Some(9)); // drops at q = 100, 200, …, 6400; the 8th needs 12800
//! assert_eq!(layer.target_step(), None);
//! assert_eq!(layer.suggested_period, Some(4)); // 4·2^11 = 8192 ≤ 10000
//! ```

use crate::schedule::{LayerSpec, Schedule, deadline_threshold, deadline_window, eigen_factor};

/// The planned schedule of a run of `steps` optimizer steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Optimizer steps in the run.
    pub steps: u64,
    /// Optimizer steps before quantization starts.
    pub schedule_offset: u64,
    /// With a deadline, the optimizer step by which every layer is at its target.
    pub deadline: Option<u64>,
    /// One entry per layer.
    pub layers: Vec<LayerPlan>,
}

/// One layer's planned schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerPlan {
    /// Layer index.
    pub layer: usize,
    /// Start, target and period.
    pub spec: LayerSpec,
    /// The normalized eigenvalue assumed for the whole run, if any.
    pub eigenvalue: Option<f32>,
    /// `(bits, step)`: the optimizer step after which the layer first holds `bits`, for every
    /// width held within the run, from `start_bits` down (with period 1 the start width drops at
    /// the first quantizing step already and does not appear).
    pub reached: Vec<(u32, u64)>,
    /// The largest period with which this layer reaches its target within the run, given the
    /// same offset and eigenvalue; `None` when no period can (the run ends before
    /// `schedule_offset + 2^(drops−1)·f^(drops−1)`), and with a deadline, which replaces the
    /// period.
    pub suggested_period: Option<u64>,
    /// Steps a run needs for this layer to reach its target with its current period
    /// (saturating at `u64::MAX`).
    pub steps_needed: u64,
}

impl LayerPlan {
    /// Bits at the end of the run; `None` when the run ends before quantization starts.
    pub fn final_bits(&self) -> Option<u32> {
        self.reached.last().map(|&(bits, _)| bits)
    }

    /// The step at which the target is reached, if it is within the run.
    pub fn target_step(&self) -> Option<u64> {
        self.reached
            .iter()
            .find(|(bits, _)| *bits == self.spec.target_bits)
            .map(|&(_, s)| s)
    }
}

/// Plans a run of `steps` optimizer steps (numbered `0..steps`) with the schedule's layers,
/// offset and eigenvalues (held fixed), from step 0; the schedule's progress is not used.
pub fn plan(schedule: &Schedule, steps: u64) -> Plan {
    let offset = schedule.schedule_offset();
    // In quantizing steps, as the schedule counts it.
    let deadline = schedule.deadline_quantizing_step();
    let layers = schedule
        .specs()
        .iter()
        .enumerate()
        .map(|(layer, spec)| {
            let eigenvalue = schedule.eigenvalues().map(|e| e[layer]);
            let factor = eigen_factor(eigenvalue);
            let mut reached: Vec<(u32, u64)> = Vec::new();
            let widths = || width_steps(spec, offset, factor, deadline);
            for (bits, step) in widths().take_while(|&(_, s)| s < steps) {
                // With period 1 the first drop happens at the first quantizing step itself: the
                // layer never holds its start width after a step, so that width is not reached.
                if reached.last().is_some_and(|&(_, last)| last == step) {
                    reached.pop();
                }
                reached.push((bits, step));
            }
            let target_step = widths().last().map_or(offset, |(_, s)| s);
            LayerPlan {
                layer,
                spec: *spec,
                eigenvalue,
                reached,
                suggested_period: deadline
                    .is_none()
                    .then(|| largest_period(spec, offset, factor, steps))
                    .flatten(),
                steps_needed: target_step.saturating_add(1),
            }
        })
        .collect();
    Plan {
        steps,
        schedule_offset: offset,
        deadline: schedule.deadline(),
        layers,
    }
}

/// `(bits, step)` for every width from start to target, at the step the layer first holds it.
fn width_steps(
    spec: &LayerSpec,
    offset: u64,
    factor: u64,
    deadline: Option<u64>,
) -> impl Iterator<Item = (u32, u64)> {
    let drops = spec.start_bits - spec.target_bits;
    let mut q = 0;
    (0..=drops).map(move |k| {
        let step = if k == 0 {
            offset as u128
        } else if let Some(d) = deadline {
            q = deadline_threshold(d, deadline_window(d, factor), q, drops - k + 1);
            offset as u128 + q as u128 - 1
        } else {
            // q_k = period · (2f)^(k−1), saturating like the state machine's threshold.
            let q = (1..k).fold(spec.period as u128, |t, _| {
                (t * 2 * factor as u128).min(u64::MAX as u128)
            });
            offset as u128 + q - 1
        };
        (spec.start_bits - k, step.min(u64::MAX as u128) as u64)
    })
}

/// Largest `p` with `p · (2f)^(drops−1) ≤ steps − offset`.
fn largest_period(spec: &LayerSpec, offset: u64, factor: u64, steps: u64) -> Option<u64> {
    let available = steps.checked_sub(offset).filter(|&n| n > 0)? as u128;
    let drops = spec.start_bits - spec.target_bits;
    if drops == 0 {
        return Some(u64::MAX);
    }
    let growth = (1..drops).fold(1u128, |g, _| g.saturating_mul(2 * factor as u128));
    let p = available / growth;
    (p > 0).then_some(p.min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuantizeConfig;
    use proptest::prelude::*;

    #[test]
    fn hand_computed_plan() {
        let cfg = QuantizeConfig::builder()
            .bits(12, 8)
            .period(10)
            .schedule_offset(0)
            .build()
            .unwrap();
        let p = plan(&Schedule::new(&cfg, 2).unwrap(), 100);
        assert_eq!(
            p.layers[1].reached,
            [(12, 0), (11, 9), (10, 19), (9, 39), (8, 79)]
        );
        assert_eq!(p.layers[1].target_step(), Some(79));
        // 10·8 = 80 quantizing steps are needed and 100 available: period 12 still fits.
        assert_eq!(p.layers[1].suggested_period, Some(12));
        assert_eq!(p.layers[1].steps_needed, 80);
        let short = plan(&Schedule::new(&cfg, 1).unwrap(), 79);
        assert_eq!(short.layers[0].final_bits(), Some(9));
        assert_eq!(short.layers[0].target_step(), None);
        assert_eq!(short.layers[0].suggested_period, Some(9));
    }

    #[test]
    fn run_ending_before_offset() {
        let cfg = QuantizeConfig::builder()
            .bits(12, 8)
            .period(10)
            .schedule_offset(50)
            .build()
            .unwrap();
        let p = plan(&Schedule::new(&cfg, 1).unwrap(), 50);
        assert_eq!(p.layers[0].final_bits(), None);
        assert_eq!(p.layers[0].suggested_period, None);
        let p = plan(&Schedule::new(&cfg, 1).unwrap(), 51);
        assert_eq!(p.layers[0].reached, [(12, 50)]);
    }

    proptest! {
        /// The closed form agrees with the state machine, step by step, with and without a
        /// deadline, and the suggested period is the largest that reaches the target.
        #[test]
        fn plan_matches_state_machine(
            start in 1u32..=16, drop in 0u32..6, period in 1u64..20, offset in 0u64..20,
            e in proptest::option::of(0.0f32..=1.0), steps in 0u64..3000,
            slack in proptest::option::of(0u64..2000),
        ) {
            let target = start.saturating_sub(drop).max(1);
            let mut builder = QuantizeConfig::builder().bits(start, target).period(period)
                .schedule_offset(offset);
            if let Some(slack) = slack {
                builder = builder.deadline(offset + u64::from(start - target) + slack);
            }
            let cfg = builder.build().unwrap();
            let mut schedule = Schedule::new(&cfg, 1).unwrap();
            if let Some(e) = e {
                schedule.set_eigenvalues(&[e]).unwrap();
            }
            let p = plan(&schedule, steps);
            let mut seen = Vec::new();
            let mut last = None;
            for _ in 0..steps {
                let r = schedule.step();
                let bits = schedule.bits(0);
                if bits != last {
                    seen.push((bits.unwrap(), r.step));
                    last = bits;
                }
            }
            prop_assert_eq!(&p.layers[0].reached, &seen);
            if let Some(deadline) = cfg.deadline {
                prop_assert!(p.layers[0].suggested_period.is_none());
                prop_assert!(p.layers[0].steps_needed <= deadline + 1);
            }
            if let Some(best) = p.layers[0].suggested_period.filter(|&b| b < 1_000_000) {
                let reaches = |period: u64| {
                    let cfg = QuantizeConfig { period, ..cfg.clone() };
                    let mut s = Schedule::new(&cfg, 1).unwrap();
                    if let Some(e) = e { s.set_eigenvalues(&[e]).unwrap(); }
                    plan(&s, steps).layers[0].target_step().is_some()
                };
                prop_assert!(reaches(best));
                prop_assert!(!reaches(best + 1) || start == target);
            }
        }
    }
}

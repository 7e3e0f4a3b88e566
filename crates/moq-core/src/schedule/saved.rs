//! A saved [`Schedule`] read back: the serialized form, checked on the way in (a checkpoint
//! is user input).

use serde::Deserialize;

use super::{LayerSpec, LayerState, Schedule};
use crate::error::{MoqError, Result};

/// The serialized form of a [`Schedule`], checked on the way in.
#[derive(Deserialize)]
pub(super) struct ScheduleState {
    specs: Vec<LayerSpec>,
    schedule_offset: u64,
    mixing: Option<f64>,
    step: u64,
    quantizing_steps: u64,
    layers: Vec<LayerState>,
    eigenvalues: Option<Vec<f32>>,
    #[serde(default)]
    deadline: Option<u64>,
    /// Absent from states saved before it existed: derived from `deadline` then.
    #[serde(default)]
    deadline_step: Option<u64>,
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
        if let Some(d) = s.deadline {
            // Every pending drop must still fit before the deadline, one per step.
            for (layer, (spec, state)) in s.specs.iter().zip(&s.layers).enumerate() {
                let left = u64::from(state.bits - spec.target_bits);
                if left > 0
                    && (state.threshold <= s.quantizing_steps
                        || state.threshold.saturating_add(left - 1) > d)
                {
                    return bad(format!(
                        "layer {layer}: next drop at quantizing step {} with {left} drops left \
                         does not fit the deadline (quantizing step {d})",
                        state.threshold
                    ));
                }
            }
        }
        if let Some(e) = &s.eigenvalues {
            check_eigenvalues(e, s.layers.len())?;
        }
        Ok(Schedule {
            specs: s.specs,
            schedule_offset: s.schedule_offset,
            mixing: s.mixing,
            step: s.step,
            quantizing_steps: s.quantizing_steps,
            layers: s.layers,
            eigenvalues: s.eigenvalues,
            deadline: s.deadline_step.or_else(|| {
                s.deadline
                    .map(|d| s.schedule_offset.saturating_add(d.saturating_sub(1)))
            }),
            quantizing_deadline: s.deadline,
        })
    }
}

pub(super) fn check_eigenvalues(eigenvalues: &[f32], layers: usize) -> Result<()> {
    if eigenvalues.len() != layers {
        return Err(MoqError::Schedule {
            reason: format!(
                "{} eigenvalues given for {layers} layers",
                eigenvalues.len()
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
    Ok(())
}

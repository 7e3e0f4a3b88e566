//! The layers of a schedule: what each is given ([`LayerSpec`]), where it is ([`LayerState`]), and
//! what a step reports ([`StepReport`], [`BitDrop`]).

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

    /// Whether the layer has bits to lose (MoQ: start above target); a layer without (basic
    /// QAT: start = target) trains at one width throughout.
    pub fn has_schedule(&self) -> bool {
        self.start_bits > self.target_bits
    }

    pub(super) fn validate(&self, layer: usize) -> Result<()> {
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
    /// With a deadline: the start `S` of the window the layer's drops are planned in (see
    /// [`deadline_window`](super::deadline_window)); 0 without one.
    #[serde(default)]
    pub window_start: u64,
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

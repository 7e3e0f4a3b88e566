//! The `quantize_training` config, read from DeepSpeed JSON or built in Rust: the types and
//! their rules here, the keys (each spelled once, with the field it sets and its range) in
//! `keys.rs`, the JSON reader in [`parse`] (its `from_json_*` methods), the builder in
//! [`builder`].
//!
//! [`QuantizeConfig::from_json_str`] reads a whole `ds_config.json` (top-level keys other than
//! `quantize_training` and `eigenvalue` are ignored) or the section on its own. Unlike DeepSpeed,
//! nothing is silently ignored inside the section: an unknown key, a value of the wrong type or
//! out of range is an error that names the key (docs/config.md lists the keys).
//!
//! ```
//! use moq_core::{QuantizeConfig, QuantType};
//! let cfg = QuantizeConfig::from_json_str(r#"{
//!     "train_batch_size": 32,
//!     "quantize_training": {
//!         "enabled": true,
//!         "quantize_bits": {"start_bits": 12, "target_bits": 8},
//!         "quantize_schedule": {"quantize_period": 10, "schedule_offset": 0},
//!         "quantize_groups": 8,
//!         "quantize_algo": {"q_type": "asymmetric"}
//!     }
//! }"#).unwrap();
//! assert_eq!((cfg.start_bits, cfg.target_bits, cfg.groups), (12, 8, 8));
//! assert_eq!(cfg.quant_type, QuantType::Asymmetric);
//!
//! let err = QuantizeConfig::from_json_str(r#"{"quantize_bits": {"start_bit": 12}}"#).unwrap_err();
//! assert_eq!(err.to_string(),
//!     "unknown config key `quantize_bits.start_bit` (did you mean `start_bits`?)");
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{MoqError, Result};

pub mod builder;
mod keys;
pub mod parse;

pub use builder::QuantizeConfigBuilder;

/// Largest supported bit width.
pub const MAX_BITS: u32 = 16;

/// How values map to the integer grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    /// Grid symmetric around zero, no zero point: `q·s`.
    Symmetric,
    /// Grid spanning `[min, max]` with an integer zero point: `(q − z)·s`.
    Asymmetric,
}

impl QuantType {
    /// The DeepSpeed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantType::Symmetric => "symmetric",
            QuantType::Asymmetric => "asymmetric",
        }
    }
}

/// How a value between two grid points is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// To the nearest grid point (ties to even).
    Nearest,
    /// Up or down at random, with the probability that makes the result unbiased.
    Stochastic,
}

impl Rounding {
    /// The DeepSpeed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Rounding::Nearest => "nearest",
            Rounding::Stochastic => "stochastic",
        }
    }
}

/// `fp16_mixed_quantize`: blend full-precision and quantized weights, moving towards the
/// quantized ones by `change_ratio` per quantizing step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixingConfig {
    /// Whether mixing is on.
    pub enabled: bool,
    /// `quantize_change_ratio`: how much the full-precision share drops per step, in (0, 1].
    pub change_ratio: f64,
}

impl Default for MixingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            change_ratio: 0.001,
        }
    }
}

/// `eigenvalue`: per-layer Hessian eigenvalues that stretch each layer's period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EigenvalueConfig {
    /// Whether eigenvalues drive the schedule.
    pub enabled: bool,
    /// Log each computation.
    pub verbose: bool,
    /// Power-iteration limit.
    pub max_iter: u32,
    /// Stop when the relative change of λ falls below this.
    pub tol: f64,
    /// Added to the norm when normalizing the iterate.
    pub stability: f64,
    /// Recompute every this many optimizer steps.
    pub gas_boundary_resolution: u64,
    /// DeepSpeed's module-name prefix of the layers (burn users give a path pattern instead).
    pub layer_name: String,
    /// DeepSpeed's number of layers under `layer_name`.
    pub layer_num: usize,
}

impl Default for EigenvalueConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            verbose: false,
            max_iter: 100,
            tol: 1e-2,
            stability: 1e-6,
            gas_boundary_resolution: 1,
            layer_name: "bert.encoder.layer".to_string(),
            layer_num: 0,
        }
    }
}

/// The whole `quantize_training` section. Fields are public; [`QuantizeConfig::validate`]
/// checks a value built by hand, and [`QuantizeConfig::builder`] builds a checked one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizeConfig {
    /// `enabled` (DeepSpeed's default: false).
    pub enabled: bool,
    /// `quantize_verbose`: log every bit drop.
    pub verbose: bool,
    /// `quantizer_kernel`: accepted for compatibility; MoQ picks kernels by backend.
    pub quantizer_kernel: bool,
    /// `quantize_type` / `quantize_algo.q_type`.
    pub quant_type: QuantType,
    /// `quantize_algo.rounding`.
    pub rounding: Rounding,
    /// `quantize_bits.start_bits`.
    pub start_bits: u32,
    /// `quantize_bits.target_bits`.
    pub target_bits: u32,
    /// `quantize_schedule.quantize_period`, in quantizing steps.
    pub period: u64,
    /// `quantize_schedule.schedule_offset`: optimizer steps before quantization starts.
    pub schedule_offset: u64,
    /// `quantize_groups`: groups per parameter, each with its own scale.
    pub groups: usize,
    /// `fp16_mixed_quantize`.
    pub mixing: MixingConfig,
    /// `eigenvalue`.
    pub eigenvalue: EigenvalueConfig,
    /// `moq.deadline` (a section of our own beside `quantize_training`): the optimizer step by
    /// which every layer is at its target. With it, the deadline schedule places every drop
    /// (`quantize_period` is not used) and eigenvalue factors decide the order and spacing of
    /// each layer's drops before it (the guide's algorithm page (docs/algorithm.md), "Deadline schedules").
    #[serde(default)]
    pub deadline: Option<u64>,
}

impl Default for QuantizeConfig {
    /// DeepSpeed's code defaults (with `enabled: false`, as there).
    fn default() -> Self {
        Self {
            enabled: false,
            verbose: false,
            quantizer_kernel: false,
            quant_type: QuantType::Symmetric,
            rounding: Rounding::Nearest,
            start_bits: 16,
            target_bits: 8,
            period: 1000,
            schedule_offset: 1000,
            groups: 1,
            mixing: MixingConfig::default(),
            eigenvalue: EigenvalueConfig::default(),
            deadline: None,
        }
    }
}

impl QuantizeConfig {
    /// Starts a builder from DeepSpeed's defaults, with `enabled` set.
    pub fn builder() -> QuantizeConfigBuilder {
        QuantizeConfigBuilder {
            config: QuantizeConfig {
                enabled: true,
                ..Self::default()
            },
        }
    }

    /// Checks every rule of docs/algorithm.md and docs/config.md; the error names the key (in DeepSpeed's
    /// spelling, relative to the section).
    pub fn validate(&self) -> Result<()> {
        self.validate_with_prefix("")
    }

    fn validate_with_prefix(&self, p: &str) -> Result<()> {
        // Each key's own range (the table's rules), then the rules between keys.
        let mut config = self.clone();
        for key in keys::KEYS.iter().filter(|k| k.alias_of.is_none()) {
            if let Some((value, reason)) = key.broken(&mut config) {
                return Err(invalid(p, key.path, value, reason));
            }
        }
        self.validate_widths(p)?;
        self.validate_deadline()
    }

    /// What the target width allows: not above the start, and at 1 or 2 bits a symmetric grid
    /// rounded to nearest.
    fn validate_widths(&self, p: &str) -> Result<()> {
        let target = |reason: &str| {
            Err(invalid(
                p,
                "quantize_bits.target_bits",
                self.target_bits.to_string(),
                reason,
            ))
        };
        if self.target_bits > self.start_bits {
            return target(&format!("must not exceed start_bits ({})", self.start_bits));
        }
        if self.target_bits <= 2 && self.quant_type == QuantType::Asymmetric {
            return target("1- and 2-bit quantization is symmetric only, but q_type is asymmetric");
        }
        if self.target_bits <= 2 && self.rounding == Rounding::Stochastic {
            return target(
                "1- and 2-bit quantization rounds to nearest only, but rounding is stochastic",
            );
        }
        Ok(())
    }

    /// The deadline: after quantization starts, with a step for every drop.
    fn validate_deadline(&self) -> Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        // The key lives outside the section: its path does not take the section's prefix.
        let invalid = |reason: String| MoqError::InvalidValue {
            key: "moq.deadline".into(),
            value: deadline.to_string(),
            reason,
        };
        let Some(quantizing) = deadline
            .checked_sub(self.schedule_offset)
            .map(|n| n.saturating_add(1))
        else {
            return Err(invalid(format!(
                "comes before quantization starts (schedule_offset {})",
                self.schedule_offset
            )));
        };
        if quantizing < u64::from(self.drops()) {
            return Err(invalid(format!(
                "leaves {quantizing} quantizing steps (steps {}..={deadline}) for {} drops \
                 ({} → {} bits), one drop per step at most",
                self.schedule_offset,
                self.drops(),
                self.start_bits,
                self.target_bits
            )));
        }
        Ok(())
    }

    /// Number of bit drops from start to target.
    pub fn drops(&self) -> u32 {
        self.start_bits - self.target_bits
    }
}

/// A config value that is out of range: `key` under the section prefix `p`.
fn invalid(p: &str, key: &str, value: String, reason: &str) -> MoqError {
    MoqError::InvalidValue {
        key: format!("{p}{key}"),
        value,
        reason: reason.to_string(),
    }
}

//! [`QuantizeConfigBuilder`]: a config built in Rust, validated like one read from JSON.

use super::{EigenvalueConfig, MixingConfig, QuantType, QuantizeConfig, Rounding};
use crate::error::Result;

/// Builds a validated [`QuantizeConfig`] in Rust; starts from DeepSpeed's defaults.
///
/// ```
/// use moq_core::{QuantizeConfig, Rounding};
/// let cfg = QuantizeConfig::builder()
///     .bits(12, 4)
///     .period(50)
///     .schedule_offset(0)
///     .groups(16)
///     .rounding(Rounding::Stochastic)
///     .build()
///     .unwrap();
/// assert!(cfg.enabled);
/// assert!(QuantizeConfig::builder().bits(4, 8).build().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct QuantizeConfigBuilder {
    pub(super) config: QuantizeConfig,
}

impl QuantizeConfigBuilder {
    /// Start and target bit widths.
    pub fn bits(mut self, start: u32, target: u32) -> Self {
        self.config.start_bits = start;
        self.config.target_bits = target;
        self
    }
    /// Quantizing steps before the first drop (the period doubles after each drop).
    pub fn period(mut self, period: u64) -> Self {
        self.config.period = period;
        self
    }
    /// Optimizer steps before quantization starts.
    pub fn schedule_offset(mut self, offset: u64) -> Self {
        self.config.schedule_offset = offset;
        self
    }
    /// Quantization groups per parameter.
    pub fn groups(mut self, groups: usize) -> Self {
        self.config.groups = groups;
        self
    }
    /// Symmetric or asymmetric grid.
    pub fn quant_type(mut self, quant_type: QuantType) -> Self {
        self.config.quant_type = quant_type;
        self
    }
    /// Nearest or stochastic rounding.
    pub fn rounding(mut self, rounding: Rounding) -> Self {
        self.config.rounding = rounding;
        self
    }
    /// Turns on mixing with the given change ratio per quantizing step.
    pub fn mixing(mut self, change_ratio: f64) -> Self {
        self.config.mixing = MixingConfig {
            enabled: true,
            change_ratio,
        };
        self
    }
    /// Eigenvalue settings.
    pub fn eigenvalue(mut self, eigenvalue: EigenvalueConfig) -> Self {
        self.config.eigenvalue = eigenvalue;
        self
    }
    /// Every layer at its target by optimizer step `step` (`moq.deadline`): the deadline
    /// schedule then places every drop, and the period is not used.
    pub fn deadline(mut self, step: u64) -> Self {
        self.config.deadline = Some(step);
        self
    }
    /// Log every bit drop.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.config.verbose = verbose;
        self
    }
    /// Checks the rules and returns the config.
    pub fn build(self) -> Result<QuantizeConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing with precise errors.

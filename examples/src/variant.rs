//! The five ways a model is trained and the MoQ config of each.

use anyhow::{Result, bail};
use moq_core::{QuantizeConfig, Schedule, plan};

/// How a model is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// No quantization: the baseline.
    FullPrecision,
    /// Post-training quantization: the full-precision model rounded once to the target, no
    /// training at low bits (what burn's `quantize_weights` does). Its config is QAT's, used
    /// only to export (`MoqOptimizer::export_at_target`).
    Ptq,
    /// Basic quantization-aware training: the target bits from step 0.
    Qat,
    /// MoQ: start high, lose a bit per period (doubling) down to the target.
    Moq,
    /// MoQ with `fp16_mixed_quantize`: each drop blends in gradually.
    MoqMixing,
    /// MoQ with `eigenvalue.enabled`: sensitive layers (large top Hessian eigenvalue) lose
    /// their bits more slowly.
    MoqEigen,
}

impl Variant {
    /// Every variant a table can show, in table order.
    pub const TABLE: [Variant; 6] = [
        Variant::FullPrecision,
        Variant::Ptq,
        Variant::Qat,
        Variant::Moq,
        Variant::MoqMixing,
        Variant::MoqEigen,
    ];

    /// Every trained variant, in table order.
    pub const ALL: [Variant; 5] = [
        Variant::FullPrecision,
        Variant::Qat,
        Variant::Moq,
        Variant::MoqMixing,
        Variant::MoqEigen,
    ];

    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Variant::FullPrecision => "full precision",
            Variant::Ptq => "PTQ (full precision, rounded once)",
            Variant::Qat => "basic QAT (target bits from step 0)",
            Variant::Moq => "MoQ (scheduled)",
            Variant::MoqMixing => "MoQ + mixing",
            Variant::MoqEigen => "MoQ + eigenvalue",
        }
    }
}

/// What every quantized variant shares.
#[derive(Clone, Copy, Debug)]
pub struct QuantSetup {
    /// Optimizer steps in the run.
    pub steps: u64,
    /// `quantize_groups`.
    pub groups: usize,
    /// MoQ's start bits.
    pub start_bits: u32,
    /// Fraction of the run by which MoQ must have reached its target.
    pub reach_by: f64,
}

/// The `quantize_training` config of `variant` at `target` bits; `None` for full precision.
/// MoQ starts at `start_bits`, or lower when a run is too short for that start (one bit less
/// at a time, until the doubling periods fit), with the planner's largest period that reaches
/// the target by `reach_by` of the run.
///
/// With eigenvalues, the most sensitive layer always has the normalised eigenvalue 1 (factor
/// 5: each period is 10 times the last), so the schedule is planned for that worst case: the
/// highest start (at most `start_bits`) from which it still reaches the target in time.
pub fn variant_config(
    variant: Variant,
    target: u32,
    setup: QuantSetup,
) -> Result<Option<QuantizeConfig>> {
    let base = QuantizeConfig::builder()
        .schedule_offset(0)
        .groups(setup.groups);
    let horizon = (setup.steps as f64 * setup.reach_by) as u64;
    // The highest start (at most `start_bits`) whose schedule reaches the target in time, and
    // the planner's period for it.
    let schedulable = |eigen: bool| -> Result<(u32, u64)> {
        let mut start = setup.start_bits.max(target);
        loop {
            let probe = base.clone().bits(start, target).period(1).build()?;
            let mut schedule = Schedule::new(&probe, 1)?;
            if eigen {
                schedule.set_eigenvalues(&[1.0])?;
            }
            match plan(&schedule, horizon).layers[0].suggested_period {
                Some(period) => return Ok((start, period.min(setup.steps))),
                None if start > target + 1 => start -= 1,
                None => bail!(
                    "{} → {target} bits{} cannot be scheduled within {horizon} steps",
                    setup.start_bits,
                    if eigen { " with eigenvalues" } else { "" }
                ),
            }
        }
    };
    let config = match variant {
        Variant::FullPrecision => return Ok(None),
        Variant::Qat | Variant::Ptq => base.bits(target, target).period(1).build()?,
        Variant::Moq | Variant::MoqMixing => {
            let (start, period) = schedulable(false)?;
            let builder = base.bits(start, target).period(period);
            if variant == Variant::MoqMixing {
                // The full-precision share fades out over half a period.
                builder.mixing((2.0 / period as f64).min(1.0)).build()?
            } else {
                builder.build()?
            }
        }
        Variant::MoqEigen => {
            let (start, period) = schedulable(true)?;
            let mut config = base.bits(start, target).period(period).build()?;
            config.eigenvalue.enabled = true;
            config
        }
    };
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moq_configs_reach_their_target_in_time() {
        let setup = QuantSetup {
            steps: 1800,
            groups: 16,
            start_bits: 12,
            reach_by: 0.6,
        };
        for target in [8, 4, 2] {
            for variant in [Variant::Moq, Variant::MoqMixing, Variant::MoqEigen] {
                let cfg = variant_config(variant, target, setup).unwrap().unwrap();
                let mut schedule = Schedule::new(&cfg, 1).unwrap();
                if cfg.eigenvalue.enabled {
                    // The worst case: the most sensitive layer.
                    schedule.set_eigenvalues(&[1.0]).unwrap();
                }
                let p = plan(&schedule, 1080);
                assert!(p.layers[0].target_step().is_some(), "{variant:?} {target}");
                assert_eq!(cfg.mixing.enabled, variant == Variant::MoqMixing);
                assert_eq!(cfg.eigenvalue.enabled, variant == Variant::MoqEigen);
            }
            let qat = variant_config(Variant::Qat, target, setup)
                .unwrap()
                .unwrap();
            assert_eq!((qat.start_bits, qat.target_bits), (target, target));
        }
        assert!(
            variant_config(Variant::FullPrecision, 8, setup)
                .unwrap()
                .is_none()
        );
    }
}

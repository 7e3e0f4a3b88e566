//! The ways a model is trained and the MoQ config of each.

use anyhow::{Result, bail};
use moq_burn::Moq;
use moq_core::allocate::Budget;
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
    /// Basic QAT with second-order widths: after the same full-precision warm-up as
    /// [`Variant::MoqSecondOrder`], each layer trains at the width allocated to it within the
    /// uniform target's export size, with no schedule (start = target: `Moq::auto_bits` then
    /// moves each layer's width, above or below the target). Against `MoqSecondOrder` it
    /// separates choosing the widths from scheduling them.
    QatSecondOrder,
    /// MoQ: start high, lose a bit per period (doubling) down to the target.
    Moq,
    /// MoQ with `fp16_mixed_quantize`: each drop blends in gradually.
    MoqMixing,
    /// MoQ with `eigenvalue.enabled` and a deadline: sensitive layers (large top Hessian
    /// eigenvalue) lose their bits later, every layer at its target by the same step.
    MoqEigen,
    /// MoQ with second-order bits: after a full-precision warm-up, each layer's target width is
    /// allocated from its top Hessian eigenvalue within the size of the uniform target's export
    /// (`Moq::auto_bits(Budget::UniformBytes(target))`), and the eigenvalue deadline schedule
    /// takes it there.
    MoqSecondOrder,
}

impl Variant {
    /// Every variant a table can show, in table order.
    pub const TABLE: [Variant; 8] = [
        Variant::FullPrecision,
        Variant::Ptq,
        Variant::Qat,
        Variant::QatSecondOrder,
        Variant::Moq,
        Variant::MoqMixing,
        Variant::MoqEigen,
        Variant::MoqSecondOrder,
    ];

    /// Every trained variant, in table order.
    pub const ALL: [Variant; 6] = [
        Variant::FullPrecision,
        Variant::Qat,
        Variant::Moq,
        Variant::MoqMixing,
        Variant::MoqEigen,
        Variant::MoqSecondOrder,
    ];

    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Variant::FullPrecision => "full precision",
            Variant::Ptq => "PTQ (full precision, rounded once)",
            Variant::Qat => "basic QAT (target bits from step 0)",
            Variant::QatSecondOrder => "QAT + second-order bits",
            Variant::Moq => "MoQ (scheduled)",
            Variant::MoqMixing => "MoQ + mixing",
            Variant::MoqEigen => "MoQ + eigenvalue",
            Variant::MoqSecondOrder => "MoQ + second-order bits",
        }
    }

    /// What the wrapper needs beyond the config: the bit allocation of the two second-order
    /// variants, whose budget is the uniform `target`-bit export's size.
    pub fn customize(self, moq: Moq, target: u32) -> Moq {
        match self {
            Variant::MoqSecondOrder | Variant::QatSecondOrder => {
                moq.auto_bits(Budget::UniformBytes(target), None)
            }
            _ => moq,
        }
    }

    /// Whether a table notes this variant's schedule: MoQ's own, with eigenvalues, and with
    /// second-order bits (mixing runs MoQ's schedule; QAT has none).
    pub fn notes_schedule(self) -> bool {
        matches!(
            self,
            Variant::Moq | Variant::MoqEigen | Variant::MoqSecondOrder
        )
    }
}

/// How a config's schedule runs, for the tables' notes: `12 → 4 bits, quantize_period 8`, or
/// with a deadline `12 → 4 bits by step 1079 (deadline)`, and the warm-up if there is one.
pub fn schedule_note(config: &QuantizeConfig) -> String {
    let timing = match config.deadline {
        Some(step) => format!("by step {step} (deadline)"),
        None => format!("quantize_period {}", config.period),
    };
    let warm_up = match config.schedule_offset {
        0 => String::new(),
        n => format!(" after {n} full-precision steps"),
    };
    format!(
        "{} → {} bits, {timing}{warm_up}",
        config.start_bits, config.target_bits
    )
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

/// The MoQ config of `variant` at `target` bits; `None` for full precision.
/// MoQ starts at `start_bits`, or lower when a run is too short for that start (one bit less
/// at a time, until the doubling periods fit), with the planner's largest period that reaches
/// the target by `reach_by` of the run.
///
/// With eigenvalues the schedule has a deadline instead of a period (`moq.deadline`, at
/// `reach_by` of the run): every layer reaches its target by then from `start_bits`, the
/// sensitive ones later. Second-order bits warm up for 5% of the run in full precision first,
/// so the allocation sees trained weights and their Hessian.
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
    let schedulable = || -> Result<(u32, u64)> {
        let mut start = setup.start_bits.max(target);
        loop {
            let probe = base.clone().bits(start, target).period(1).build()?;
            let schedule = Schedule::new(&probe, 1)?;
            match plan(&schedule, horizon).layers[0].suggested_period {
                Some(period) => return Ok((start, period.min(setup.steps))),
                None if start > target + 1 => start -= 1,
                None => bail!(
                    "{} → {target} bits cannot be scheduled within {horizon} steps",
                    setup.start_bits
                ),
            }
        }
    };
    let config = match variant {
        Variant::FullPrecision => return Ok(None),
        Variant::Qat | Variant::Ptq => base.bits(target, target).period(1).build()?,
        Variant::QatSecondOrder => {
            // The same warm-up as MoqSecondOrder; the eigenvalues are the sensitivities only
            // (with start = target there is no drop for them to delay).
            let mut config = base
                .schedule_offset(setup.steps / 20)
                .bits(target, target)
                .period(1)
                .build()?;
            config.eigenvalue.enabled = true;
            config
        }
        Variant::Moq | Variant::MoqMixing => {
            let (start, period) = schedulable()?;
            let builder = base.bits(start, target).period(period);
            if variant == Variant::MoqMixing {
                // The full-precision share fades out over half a period.
                builder.mixing((2.0 / period as f64).min(1.0)).build()?
            } else {
                builder.build()?
            }
        }
        Variant::MoqEigen | Variant::MoqSecondOrder => {
            let start = setup.start_bits.max(target);
            let warm_up = match variant {
                Variant::MoqSecondOrder => setup.steps / 20,
                _ => 0,
            };
            let Some(deadline) = horizon.checked_sub(1).filter(|&d| d >= warm_up) else {
                bail!("{start} → {target} bits cannot be scheduled within {horizon} steps");
            };
            let mut config = base
                .schedule_offset(warm_up)
                .bits(start, target)
                .deadline(deadline)
                .build()?;
            config.eigenvalue.enabled = true;
            config
        }
    };
    Ok(Some(config))
}

/// Checks every schedule of a table (each trained variant at each of `targets`) before
/// anything trains: the error of the first that does not fit the run.
pub fn check_schedules(targets: &[u32], setup: QuantSetup) -> Result<()> {
    for &target in targets {
        for variant in Variant::ALL {
            variant_config(variant, target, setup)?;
        }
    }
    Ok(())
}

/// A cell of an example's table: a variant at a target width (a column), with its config.
pub struct TableCell {
    /// The column, in the order of the targets.
    pub column: usize,
    /// The target bits.
    pub target: u32,
    /// How the cell's runs train.
    pub variant: Variant,
    /// Its MoQ config; `None` for full precision.
    pub config: Option<QuantizeConfig>,
}

impl TableCell {
    /// The cells of column `column`, at `target` bits: every trained variant in table order,
    /// full precision in the first column only.
    pub fn column(column: usize, target: u32, setup: QuantSetup) -> Result<Vec<Self>> {
        let mut cells = Vec::new();
        for variant in Variant::ALL {
            if variant == Variant::FullPrecision && column > 0 {
                continue;
            }
            let config = variant_config(variant, target, setup)?;
            cells.push(Self {
                column,
                target,
                variant,
                config,
            });
        }
        Ok(cells)
    }

    /// The width in a run's line: `fp32` for full precision, else `4-bit`.
    pub fn label(&self) -> String {
        if self.variant == Variant::FullPrecision {
            "fp32".to_string()
        } else {
            format!("{}-bit", self.target)
        }
    }
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
            for variant in [
                Variant::Moq,
                Variant::MoqMixing,
                Variant::MoqEigen,
                Variant::MoqSecondOrder,
            ] {
                let cfg = variant_config(variant, target, setup).unwrap().unwrap();
                let mut schedule = Schedule::new(&cfg, 1).unwrap();
                if cfg.eigenvalue.enabled {
                    // The worst case: the most sensitive layer.
                    schedule.set_eigenvalues(&[1.0]).unwrap();
                    assert_eq!(cfg.start_bits, 12, "a deadline needs no lower start");
                }
                let p = plan(&schedule, 1080);
                assert!(p.layers[0].target_step().is_some(), "{variant:?} {target}");
                assert_eq!(cfg.mixing.enabled, variant == Variant::MoqMixing);
                assert_eq!(
                    cfg.eigenvalue.enabled,
                    matches!(variant, Variant::MoqEigen | Variant::MoqSecondOrder)
                );
                assert_eq!(cfg.schedule_offset > 0, variant == Variant::MoqSecondOrder);
            }
            let qat = variant_config(Variant::Qat, target, setup)
                .unwrap()
                .unwrap();
            assert_eq!((qat.start_bits, qat.target_bits), (target, target));
            let qat2 = variant_config(Variant::QatSecondOrder, target, setup)
                .unwrap()
                .unwrap();
            assert_eq!((qat2.start_bits, qat2.target_bits), (target, target));
            assert_eq!(qat2.schedule_offset, 90, "the second-order warm-up");
            assert!(qat2.eigenvalue.enabled && qat2.deadline.is_none());
        }
        assert!(
            variant_config(Variant::FullPrecision, 8, setup)
                .unwrap()
                .is_none()
        );
        check_schedules(&[8, 4, 2], setup).unwrap();
        let first = TableCell::column(0, 8, setup).unwrap();
        let second = TableCell::column(1, 4, setup).unwrap();
        assert_eq!(first.len(), Variant::ALL.len());
        assert_eq!(
            (first[0].label(), first[1].label()),
            ("fp32".into(), "8-bit".into())
        );
        assert!(
            second
                .iter()
                .all(|c| c.variant != Variant::FullPrecision && c.column == 1)
        );
    }
}

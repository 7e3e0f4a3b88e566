//! The runs of a study table: methods × widths × step budgets × learning rates × seeds, each
//! with a stable name for its cell.

use serde::{Deserialize, Serialize};

use crate::Variant;

/// How a width's scales are shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    /// One scale per group of this many contiguous values (`Moq::group_size`).
    Group(usize),
    /// One scale per tensor (`quantize_groups` 1).
    Tensor,
}

/// A target width and its grain: one column of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Width {
    /// Bits per weight.
    pub bits: u32,
    /// Scale sharing.
    pub grain: Grain,
}

impl Width {
    /// Column label: `3-bit, groups of 128` or `4-bit, per tensor`.
    pub fn label(&self) -> String {
        match self.grain {
            Grain::Group(n) => format!("{}-bit, groups of {n}", self.bits),
            Grain::Tensor => format!("{}-bit, per tensor", self.bits),
        }
    }

    /// Part of a cell's name: `3g128`, `4t`.
    pub fn tag(&self) -> String {
        match self.grain {
            Grain::Group(n) => format!("{}g{n}", self.bits),
            Grain::Tensor => format!("{}t", self.bits),
        }
    }
}

/// Which table a run belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Every method at every width, the base step budget and learning rate.
    Main,
    /// The second step budget.
    Longer,
    /// The learning-rate sweep.
    Sweep,
}

/// One run of a study: a cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StudyRun {
    /// The method.
    pub variant: Variant,
    /// The target (none for full precision).
    pub width: Option<Width>,
    /// Multiple of the base step budget.
    pub budget: u64,
    /// Multiple of the base learning rate.
    pub lr_factor: f64,
    /// The seed: data order and batches, the same for every method.
    pub seed: u64,
    /// Its table.
    pub part: Part,
}

impl StudyRun {
    /// The cell's file name: `Qat-3g128-x1-lr1-seed0`.
    pub fn name(&self) -> String {
        let width = self.width.map_or_else(|| "fp32".to_string(), |w| w.tag());
        format!(
            "{:?}-{width}-x{}-lr{}-seed{}",
            self.variant, self.budget, self.lr_factor, self.seed
        )
    }
}

/// What a run reached.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// The task's quality metric on held-out data.
    pub quality: f64,
    /// A second metric of the task, where it has one (embedding distillation: the 5th
    /// percentile of the cosines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<f64>,
    /// Bytes of the quantized weights as exported (codes, scales, zero points); full
    /// precision: 4 bytes a weight.
    pub bytes: u64,
    /// Each layer's final width (empty for full precision).
    pub widths: Vec<u32>,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// The methods of the main table, in row order.
pub const METHODS: [Variant; 7] = [
    Variant::FullPrecision,
    Variant::Ptq,
    Variant::Qat,
    Variant::Moq,
    Variant::MoqEigen,
    Variant::QatSecondOrder,
    Variant::MoqSecondOrder,
];

/// The methods run at the second step budget.
pub const LONGER: [Variant; 4] = [
    Variant::Qat,
    Variant::Moq,
    Variant::QatSecondOrder,
    Variant::MoqSecondOrder,
];

/// The methods of the learning-rate sweep.
pub const SWEPT: [Variant; 2] = [Variant::Qat, Variant::Moq];

/// A study's shape.
#[derive(Clone, Debug)]
pub struct Grid {
    /// The main table's columns.
    pub widths: Vec<Width>,
    /// The columns run again at `budget` times the steps.
    pub longer: Vec<Width>,
    /// The second step budget, a multiple of the base one.
    pub budget: u64,
    /// The column of the learning-rate sweep, and its factors besides 1.
    pub sweep: Option<(Width, Vec<f64>)>,
}

impl Grid {
    /// The runs of `seed`, main table first.
    pub fn runs(&self, seed: u64) -> Vec<StudyRun> {
        let run = |variant, width, budget, lr_factor, part| StudyRun {
            variant,
            width,
            budget,
            lr_factor,
            seed,
            part,
        };
        let mut runs = vec![run(Variant::FullPrecision, None, 1, 1.0, Part::Main)];
        for &w in &self.widths {
            for v in METHODS.into_iter().skip(1) {
                runs.push(run(v, Some(w), 1, 1.0, Part::Main));
            }
        }
        for &w in &self.longer {
            for v in LONGER {
                runs.push(run(v, Some(w), self.budget, 1.0, Part::Longer));
            }
        }
        if let Some((w, factors)) = &self.sweep {
            for &f in factors {
                for v in SWEPT {
                    runs.push(run(v, Some(*w), 1, f, Part::Sweep));
                }
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_of_a_seed_has_its_own_name() {
        let g128 = |bits| Width {
            bits,
            grain: Grain::Group(128),
        };
        let grid = Grid {
            widths: vec![
                g128(3),
                g128(2),
                Width {
                    bits: 4,
                    grain: Grain::Tensor,
                },
            ],
            longer: vec![g128(3)],
            budget: 2,
            sweep: Some((g128(3), vec![0.3, 3.0])),
        };
        let runs = grid.runs(4);
        // 1 full precision + 3 widths × 6 methods + 4 longer + 2 × 2 swept.
        assert_eq!(runs.len(), 1 + 18 + 4 + 4);
        let mut names: Vec<String> = runs.iter().map(StudyRun::name).collect();
        assert_eq!(names[0], "FullPrecision-fp32-x1-lr1-seed4");
        assert!(names.contains(&"QatSecondOrder-3g128-x2-lr1-seed4".to_string()));
        assert!(names.contains(&"Moq-3g128-x1-lr0.3-seed4".to_string()));
        assert!(names.contains(&"Ptq-4t-x1-lr1-seed4".to_string()));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), runs.len());
    }
}

//! A study's tables and frontier figure, from the outcomes of its cells: each method's mean
//! (± the standard deviation over seeds) and its paired difference against basic QAT run on
//! the same seeds, with the 95% interval and its verdict.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::Result;
use moq_core::plot::{Curve, curves_svg};

use super::grid::{LONGER, METHODS, SWEPT};
use super::{Grid, Outcome, Part, StudyRun, Width, paired};
use crate::{Variant, mean_std};

/// The finished runs of a study and how to read its metric.
pub struct Tables<'a> {
    /// The study's shape.
    pub grid: &'a Grid,
    /// The seeds to tabulate.
    pub seeds: Vec<u64>,
    /// The outcome of each finished run, by cell name.
    pub outcomes: &'a HashMap<String, Outcome>,
    /// The metric's name, for the captions (`bits per character`).
    pub metric: &'a str,
    /// Whether lower values of the metric are better.
    pub lower_is_better: bool,
    /// Tabulate the outcomes' second metric instead of their first.
    pub secondary: bool,
}

impl Tables<'_> {
    /// The metric over the seeds (in seed order) of the runs like `run` but for the seed;
    /// seeds not finished are `None`.
    fn values(&self, run: StudyRun) -> Vec<Option<f64>> {
        self.seeds
            .iter()
            .map(|&seed| {
                let name = StudyRun { seed, ..run }.name();
                let outcome = self.outcomes.get(&name)?;
                match self.secondary {
                    true => outcome.secondary,
                    false => Some(outcome.quality),
                }
            })
            .collect()
    }

    /// `mean ± std`, and against `reference` (the same seeds) the paired difference.
    fn cell(&self, run: StudyRun, reference: Option<StudyRun>) -> String {
        let values = self.values(run);
        let done: Vec<f64> = values.iter().flatten().copied().collect();
        if done.is_empty() {
            return "–".into();
        }
        let (mean, std) = mean_std(&done);
        let mut text = format!("{mean:.3} ± {std:.3}");
        if done.len() < self.seeds.len() {
            let _ = write!(text, " ({} seeds)", done.len());
        }
        let Some(reference) = reference else {
            return text + " (reference)";
        };
        let (a, b): (Vec<f64>, Vec<f64>) = values
            .iter()
            .zip(self.values(reference))
            .filter_map(|(a, b)| Some(((*a)?, b?)))
            .unzip();
        if let Some(p) = paired(&a, &b) {
            let _ = write!(
                text,
                "<br>Δ {:+.3} [{:+.3}, {:+.3}] {}",
                p.mean,
                p.low,
                p.high,
                p.verdict(self.lower_is_better).word()
            );
        }
        text
    }

    /// The main table: every method at every width.
    pub fn main(&self) -> String {
        let widths = &self.grid.widths;
        let mut out = header(widths);
        for variant in METHODS {
            let _ = write!(out, "| {} |", variant.label());
            for &w in widths {
                let run = main_run(variant, w);
                let qat = (variant != Variant::Qat).then_some(main_run(Variant::Qat, w));
                let _ = write!(out, " {} |", self.cell(run, qat));
            }
            out.push('\n');
        }
        out
    }

    /// Mean export bytes of each method's quantized weights at every width of the main table.
    pub fn bytes(&self) -> String {
        let widths = &self.grid.widths;
        let mut out = header(widths);
        for variant in METHODS {
            let _ = write!(out, "| {} |", variant.label());
            for &w in widths {
                let bytes: Vec<f64> = self
                    .seeds
                    .iter()
                    .filter_map(|&seed| {
                        let name = StudyRun {
                            seed,
                            ..main_run(variant, w)
                        }
                        .name();
                        self.outcomes.get(&name).map(|o| o.bytes as f64)
                    })
                    .collect();
                match bytes.is_empty() {
                    true => out.push_str(" – |"),
                    false => {
                        let _ = write!(out, " {:.0} |", mean_std(&bytes).0);
                    }
                }
            }
            out.push('\n');
        }
        out
    }

    /// The second step budget: each method against basic QAT at that budget.
    pub fn longer(&self) -> String {
        let mut out = header(&self.grid.longer);
        for variant in LONGER {
            let _ = write!(out, "| {} |", variant.label());
            for &w in &self.grid.longer {
                let at = |variant| StudyRun {
                    budget: self.grid.budget,
                    part: Part::Longer,
                    ..main_run(variant, w)
                };
                let qat = (variant != Variant::Qat).then_some(at(Variant::Qat));
                let _ = write!(out, " {} |", self.cell(at(variant), qat));
            }
            out.push('\n');
        }
        out
    }

    /// The learning-rate sweep: each method and factor against basic QAT at the base rate.
    pub fn sweep(&self) -> Option<String> {
        let (w, factors) = self.grid.sweep.as_ref()?;
        let mut all = factors.clone();
        all.push(1.0);
        all.sort_by(f64::total_cmp);
        let mut out = format!(
            "| method | learning rate × | {} |\n| --- | --- | --- |\n",
            w.label()
        );
        for variant in SWEPT {
            for &f in &all {
                let run = StudyRun {
                    lr_factor: f,
                    part: if f == 1.0 { Part::Main } else { Part::Sweep },
                    ..main_run(variant, *w)
                };
                let qat = main_run(Variant::Qat, *w);
                let reference = (run != qat).then_some(qat);
                let _ = writeln!(
                    out,
                    "| {} | {f} | {} |",
                    variant.label(),
                    self.cell(run, reference)
                );
            }
        }
        Some(out)
    }
}

/// The main table's run of `variant` at `w` (seed 0; the tables vary the seed).
fn main_run(variant: Variant, w: Width) -> StudyRun {
    StudyRun {
        variant,
        width: (variant != Variant::FullPrecision).then_some(w),
        budget: 1,
        lr_factor: 1.0,
        seed: 0,
        part: Part::Main,
    }
}

fn header(widths: &[Width]) -> String {
    let labels: Vec<String> = widths.iter().map(Width::label).collect();
    format!(
        "| method | {} |\n|{}\n",
        labels.join(" | "),
        " --- |".repeat(widths.len() + 1)
    )
}

/// The frontier: each method's mean metric against its mean export bytes (MiB) at the main
/// table's widths; full precision is one point.
pub fn frontier_svg(tables: &Tables<'_>, title: &str) -> Result<String> {
    let mut curves = Vec::new();
    for variant in METHODS {
        let mut points = Vec::new();
        for &w in &tables.grid.widths {
            let found: Vec<&Outcome> = tables
                .seeds
                .iter()
                .filter_map(|&seed| {
                    let name = StudyRun {
                        seed,
                        ..main_run(variant, w)
                    }
                    .name();
                    tables.outcomes.get(&name)
                })
                .collect();
            if found.is_empty() {
                continue;
            }
            let n = found.len() as f64;
            let mib = found.iter().map(|o| o.bytes as f64).sum::<f64>() / n / 1048576.0;
            let quality = found.iter().map(|o| o.quality).sum::<f64>() / n;
            points.push((mib, quality));
            if variant == Variant::FullPrecision {
                break;
            }
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !points.is_empty() {
            curves.push(Curve::new(variant.label(), points));
        }
    }
    Ok(curves_svg(
        title,
        "export size of the quantized weights (MiB)",
        tables.metric,
        &curves,
    )?)
}

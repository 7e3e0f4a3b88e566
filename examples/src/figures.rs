//! The examples' SVG figures: schedules as run, loss and accuracy curves.

use std::path::{Path, PathBuf};

use anyhow::Result;
use moq_core::QuantizeConfig;
use moq_core::plot::{Curve, Staircase, curves_svg, schedule_svg};

use crate::{Trained, Variant, write_file, write_section};

/// `(step, value)` points of a curve.
pub type Points = Vec<(u64, f64)>;

/// The figures of an example, written into `figures/` next to its markdown file: per target
/// width the schedules MoQ and MoQ + eigenvalue ran and the loss and accuracy curves of every
/// variant (seed 0; full precision, trained once, appears in every target's curves).
pub struct Figures {
    example: String,
    dir: PathBuf,
    full_precision: Option<(Points, Points)>,
    runs: Vec<(Variant, Points, Points)>,
    written: Vec<PathBuf>,
}

impl Figures {
    /// The figures of `example`, whose markdown file is `out`.
    pub fn new(example: &str, out: &Path) -> Self {
        Self {
            example: example.to_string(),
            dir: out.parent().unwrap_or(Path::new(".")).join("figures"),
            full_precision: None,
            runs: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Keeps the curves of a seed-0 run, and writes the schedule it followed when it is MoQ or
    /// MoQ + eigenvalue (`config` is the run's, `steps` its length).
    pub fn add<M>(
        &mut self,
        variant: Variant,
        target: u32,
        config: Option<&QuantizeConfig>,
        trained: &Trained<M>,
        steps: u64,
    ) -> Result<()> {
        let curves = (trained.loss_curve.clone(), trained.accuracy_curve.clone());
        if variant == Variant::FullPrecision {
            self.full_precision = Some(curves.clone());
        }
        self.runs.push((variant, curves.0, curves.1));
        let tag = match variant {
            Variant::Moq => "moq",
            Variant::MoqEigen => "eigen",
            _ => return Ok(()),
        };
        let Some(config) = config else {
            return Ok(());
        };
        let example = &self.example;
        let path = self
            .dir
            .join(format!("{example}-{target}bit-schedule-{tag}.svg"));
        let title = format!(
            "{example}: {} schedule as run, {} → {target} bits (seed 0)",
            variant.label(),
            config.start_bits
        );
        write_schedule(&path, &title, trained, config.start_bits, steps)?;
        self.written.push(path);
        Ok(())
    }

    /// Writes `{example}-{target}bit-loss.svg` and `-accuracy.svg` from the runs added since the
    /// last call (and the full-precision run).
    pub fn finish_target(&mut self, target: u32, title: &str) -> Result<()> {
        let mut runs = std::mem::take(&mut self.runs);
        if let Some((loss, acc)) = &self.full_precision
            && !runs.iter().any(|r| r.0 == Variant::FullPrecision)
        {
            runs.insert(0, (Variant::FullPrecision, loss.clone(), acc.clone()));
        }
        for (name, label) in [("loss", "training loss"), ("accuracy", "test accuracy")] {
            let curves: Vec<Curve> = runs
                .iter()
                .map(|(variant, loss, accuracy)| {
                    let points = if name == "loss" { loss } else { accuracy };
                    let points = points.iter().map(|&(x, y)| (x as f64, y)).collect();
                    Curve::new(variant.label(), points)
                })
                .collect();
            let svg = curves_svg(
                &format!("{title}: {label}"),
                "optimizer step",
                name,
                &curves,
            )?;
            let path = self
                .dir
                .join(format!("{}-{target}bit-{name}.svg", self.example));
            write_file(&path, svg.as_bytes())?;
            self.written.push(path);
        }
        Ok(())
    }

    /// Writes `body` with links to every figure as the section `section` of the markdown file
    /// `out`, and says where everything went.
    pub fn publish(&self, out: &Path, section: &str, body: &str) -> Result<()> {
        let base = out.parent().unwrap_or(Path::new(""));
        let links: Vec<String> = self
            .written
            .iter()
            .map(|f| {
                let rel = f.strip_prefix(base).unwrap_or(f);
                let name = rel
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into());
                format!("![{name}]({})", rel.display())
            })
            .collect();
        let body = format!(
            "{}\n\nFigures (seed 0 of each variant; the schedules are those MoQ and MoQ + eigenvalue \
             followed):\n\n{}",
            body.trim_end(),
            links.join("\n")
        );
        write_section(out, section, &body)?;
        println!("table written to {}", out.display());
        for path in &self.written {
            println!("figure written to {}", path.display());
        }
        Ok(())
    }
}

/// Writes the schedule a run actually followed (bits per layer over its steps) to `path`.
fn write_schedule<M>(
    path: &Path,
    title: &str,
    trained: &Trained<M>,
    start_bits: u32,
    steps: u64,
) -> Result<()> {
    let layers: Vec<Staircase> = trained
        .layers
        .iter()
        .enumerate()
        .map(|(layer, name)| {
            let mut reached = vec![(start_bits, 0)];
            reached.extend(
                trained
                    .drops
                    .iter()
                    .filter(|d| d.1 == layer)
                    .map(|&(step, _, bits)| (bits, step)),
            );
            Staircase::new(name.clone(), reached)
        })
        .collect();
    write_file(path, schedule_svg(title, steps, &layers)?.as_bytes())
}

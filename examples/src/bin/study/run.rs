//! What every task of the study shares: where its cells and models live, the loop over its
//! grid that skips finished cells, and the tables and figure written from the cells.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use moq_burn::Moq;
use moq_burn::moq_core::QuantizeConfig;
use moq_examples::study::{Grain, Grid, Outcome, Part, StudyRun, Tables, Width, frontier_svg};
use moq_examples::{
    Cells, QuantSetup, Variant, results_path, variant_config, write_file, write_section,
};

use crate::Args;

/// The workspace's root (the examples crate's parent).
pub fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `bits` in groups of 128 values.
pub fn g128(bits: u32) -> Width {
    Width {
        bits,
        grain: Grain::Group(128),
    }
}

/// `bits` with one scale per tensor.
pub fn per_tensor(bits: u32) -> Width {
    Width {
        bits,
        grain: Grain::Tensor,
    }
}

/// Every task's grid: 3 and 2 bits in groups of 128, 4 and 3 bits per tensor; twice the steps
/// at 3-bit groups and 4-bit per tensor; learning rates × 0.3 and × 3 at 3-bit groups. A
/// quick grid has the columns `quick` and one of each of the rest.
pub fn grid(quick: Option<Vec<Width>>) -> Grid {
    match quick {
        Some(widths) => Grid {
            widths,
            longer: vec![g128(3)],
            budget: 2,
            sweep: Some((g128(3), vec![3.0])),
        },
        None => Grid {
            widths: vec![g128(3), g128(2), per_tensor(4), per_tensor(3)],
            longer: vec![g128(3), per_tensor(4)],
            budget: 2,
            sweep: Some((g128(3), vec![0.3, 3.0])),
        },
    }
}

/// What every quantized run of `steps` steps shares: MoQ from at most 12 bits, at its target by
/// 60% of the run; the width's grain comes from [`quantized`]'s wrapper, not `quantize_groups`.
pub fn setup(steps: u64) -> QuantSetup {
    QuantSetup {
        steps,
        groups: 1,
        start_bits: 12,
        reach_by: 0.6,
    }
}

/// How the eigenvalues of a run are computed: power iterations per layer, computations a run.
#[derive(Clone, Copy, Debug)]
pub struct EigenBudget {
    /// `eigenvalue.max_iter`.
    pub iters: u32,
    /// About this many computations a run (their spacing, `gas_boundary_resolution`).
    pub runs: u64,
}

/// The config of quantized `run` at `width` over `steps` steps, and the wrapper's setup:
/// parameters under `include`, one layer per match of `layers`, the variant's extras, the
/// width's grain.
pub fn quantized(
    run: &StudyRun,
    width: Width,
    steps: u64,
    eigen: EigenBudget,
    include: &'static str,
    layers: &'static str,
) -> Result<(QuantizeConfig, impl Fn(Moq) -> Moq + Copy)> {
    let Some(mut cfg) = variant_config(run.variant, width.bits, setup(steps))? else {
        bail!("{:?} has no quantized config", run.variant);
    };
    cfg.eigenvalue.max_iter = eigen.iters;
    cfg.eigenvalue.gas_boundary_resolution = (steps / eigen.runs).max(1);
    let variant = run.variant;
    let customize = move |moq: Moq| {
        let moq = variant.customize(moq.include(include).layers(layers), width.bits);
        match width.grain {
            Grain::Group(n) => moq.group_size(n),
            Grain::Tensor => moq,
        }
    };
    Ok((cfg, customize))
}

/// Seeds this run does.
pub fn seeds(args: &Args) -> u64 {
    args.seeds.unwrap_or(if args.quick { 2 } else { 5 })
}

/// The cells of `task` in `configuration`: under `--cells`, or `docs/study/cells` (committed),
/// or `target/results/study-cells` with `--quick`.
pub fn cells(args: &Args, task: &str, configuration: &str) -> Result<Cells> {
    let default = match args.quick {
        true => "target/results/study-cells",
        false => "docs/study/cells",
    };
    let root = args
        .cells
        .clone()
        .unwrap_or_else(|| workspace().join(default));
    Cells::new(&root.join(task), configuration, args.fresh)
}

/// Where the task's models of this configuration are kept (not committed: they are rebuilt
/// from their seeds).
pub fn models(args: &Args, cells: &Cells) -> PathBuf {
    args.models
        .clone()
        .unwrap_or_else(|| workspace().join("target/results/study-models"))
        .join(cells.dir().file_name().unwrap_or_default())
}

fn wanted(args: &Args, part: Part) -> bool {
    let name = match part {
        Part::Main => "main",
        Part::Longer => "longer",
        Part::Sweep => "sweep",
    };
    args.parts
        .as_ref()
        .is_none_or(|p| p.iter().any(|p| p == name))
}

/// Runs every unfinished cell of this run's seeds and parts (full precision always: PTQ
/// rounds it), keeping each as it finishes.
pub fn run_grid(
    args: &Args,
    grid: &Grid,
    cells: &Cells,
    mut run_cell: impl FnMut(&StudyRun) -> Result<Outcome>,
) -> Result<()> {
    let first = args.first_seed;
    let runs: Vec<StudyRun> = (first..first + seeds(args))
        .flat_map(|seed| grid.runs(seed))
        .filter(|r| wanted(args, r.part) || r.variant == Variant::FullPrecision)
        .collect();
    for (i, run) in runs.iter().enumerate() {
        if cells.get::<Outcome>(&run.name())?.is_some() {
            continue;
        }
        let outcome = run_cell(run)?;
        let secondary = outcome
            .secondary
            .map_or_else(String::new, |s| format!(" ({s:.4})"));
        println!(
            "  [{}/{}] seed {} {:<38} {:<24} x{} lr×{}: {:.4}{secondary}, {} B, widths {:?} ({:.0} s)",
            i + 1,
            runs.len(),
            run.seed,
            run.variant.label(),
            run.width.map_or_else(|| "f32".into(), |w| w.label()),
            run.budget,
            run.lr_factor,
            outcome.quality,
            outcome.bytes,
            outcome.widths,
            outcome.seconds
        );
        cells.put(&run.name(), &outcome)?;
    }
    Ok(())
}

/// How a task's tables are captioned.
pub struct Report<'a> {
    /// The task's name: the section and figure names (`charlm`).
    pub task: &'a str,
    /// The section's title.
    pub title: &'a str,
    /// The metric (`held-out bits per character`).
    pub metric: &'a str,
    /// Whether lower is better.
    pub lower_is_better: bool,
    /// The second metric's name, where the outcomes have one.
    pub secondary: Option<&'a str>,
    /// The task, model and training, as a paragraph.
    pub description: String,
    /// Notes after the tables (schedules and the like).
    pub notes: String,
}

/// Writes the task's tables and frontier figure from every finished cell of seeds
/// `0 .. first-seed + seeds`.
pub fn publish(args: &Args, grid: &Grid, cells: &Cells, report: &Report<'_>) -> Result<()> {
    let last = args.first_seed + seeds(args);
    let seeds: Vec<u64> = (0..last).collect();
    let mut outcomes = HashMap::new();
    let mut seconds = 0.0;
    for &seed in &seeds {
        for run in grid.runs(seed) {
            if let Some(o) = cells.get::<Outcome>(&run.name())? {
                seconds += o.seconds;
                outcomes.insert(run.name(), o);
            }
        }
    }
    if outcomes.is_empty() {
        println!("no finished cells in {}: no tables", cells.dir().display());
        return Ok(());
    }
    let tables = |secondary| Tables {
        grid,
        seeds: seeds.clone(),
        outcomes: &outcomes,
        metric: report.metric,
        lower_is_better: report.lower_is_better,
        secondary,
    };
    let first = tables(false);
    let out = results_path(&args.out, args.docs);
    let base = out.parent().unwrap_or(Path::new("")).to_path_buf();
    let figure = format!("figures/study-{}-frontier.svg", report.task);
    let title = format!("{}: {} against export size", report.task, report.metric);
    write_file(
        &base.join(&figure),
        frontier_svg(&first, &title)?.as_bytes(),
    )?;
    let command = format!(
        "cargo run --release -p moq-examples --features tch --bin study -- {} --backend {} --seeds {}{}",
        report.task,
        args.backend,
        last,
        if args.quick { " --quick" } else { "" }
    );
    let mut body = format!(
        "## Study: {}\n\nProduced by `{command}` ({:.1} h of runs in its cells).\n\n{} Each cell: \
         mean ± std over seeds, and the paired difference against basic QAT on the same seeds \
         with its 95% t interval (better, worse, or a tie when the interval holds 0).\n\n{}: \
         {}.\n\n{}\nExport bytes of the quantized weights (codes and scales), mean over \
         seeds:\n\n{}\nAt {}× the steps:\n\n{}",
        report.title,
        seconds / 3600.0,
        report.description,
        report.metric,
        if report.lower_is_better {
            "lower is better"
        } else {
            "higher is better"
        },
        first.main(),
        first.bytes(),
        grid.budget,
        first.longer(),
    );
    if let Some(sweep) = first.sweep() {
        body.push_str(&format!("\nLearning-rate sweep:\n\n{sweep}"));
    }
    if let Some(name) = report.secondary {
        body.push_str(&format!("\n{name}:\n\n{}", tables(true).main()));
    }
    body.push_str(&format!(
        "\n{}\n\n![study-{}-frontier]({figure})\n",
        report.notes, report.task
    ));
    println!("\n{body}");
    write_section(&out, &format!("study-{}", report.task), &body)?;
    println!(
        "tables written to {}, figure to {}",
        out.display(),
        base.join(&figure).display()
    );
    Ok(())
}

//! `moq schedule`: the planned bit schedule, as CSV or as a summary for humans.

use std::io::{self, Write};

use anyhow::{Context, Result, bail};
use moq_core::plot::Staircase;
use moq_core::{LayerPlan, Plan, QuantizeConfig, Schedule, plan};

use crate::{ScheduleArgs, read_config};

/// Runs the subcommand.
pub fn run(args: &ScheduleArgs) -> Result<()> {
    let mut config = read_config(&args.config)?;
    if let Some(deadline) = args.deadline {
        config.deadline = Some(deadline);
        config.validate().context("--deadline")?;
    }
    let layers = match (args.layers, &args.eigenvalues) {
        (Some(0), _) => bail!("--layers must be at least 1"),
        (Some(layers), Some(e)) if e.len() != layers => {
            bail!("--eigenvalues gives {} values for {layers} layers", e.len())
        }
        (Some(layers), _) => layers,
        (None, Some(e)) => e.len(),
        (None, None) => 1,
    };
    let mut schedule = Schedule::new(&config, layers).context("schedule")?;
    if let Some(e) = &args.eigenvalues {
        schedule.set_eigenvalues(e).context("--eigenvalues")?;
    }
    let plan = plan(&schedule, args.steps);
    if let Some(path) = &args.plot {
        let title = format!(
            "{}: {} → {} bits, {}, offset {}",
            args.config.file_name().map_or_else(
                || args.config.display().to_string(),
                |n| n.to_string_lossy().into()
            ),
            config.start_bits,
            config.target_bits,
            timing(&config),
            config.schedule_offset
        );
        let svg = moq_core::plot::schedule_svg(&title, plan.steps, &Staircase::from_plan(&plan))?;
        crate::write_whole(path, svg.as_bytes())?;
        crate::say(&format!("moq: schedule plot written to {}", path.display()));
    }
    let text = if args.summary {
        summary(args, &config, &plan)
    } else {
        csv(&plan)
    };
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// `step,layer,bits` rows: one whenever a layer's bits after step s differ from its bits after
/// step s − 1 (the first quantizing step always differs from "not yet quantized").
fn csv(plan: &Plan) -> String {
    let mut rows: Vec<(u64, usize, u32)> = plan
        .layers
        .iter()
        .flat_map(|l| {
            l.reached
                .iter()
                .map(move |&(bits, step)| (step, l.layer, bits))
        })
        .collect();
    rows.sort_unstable();
    let mut out = String::from("step,layer,bits\n");
    for (step, layer, bits) in rows {
        out.push_str(&format!("{step},{layer},{bits}\n"));
    }
    out
}

/// What places the drops: the period, or the deadline.
fn timing(config: &QuantizeConfig) -> String {
    match config.deadline {
        Some(step) => format!("deadline step {step}"),
        None => format!("period {}", config.period),
    }
}

fn summary(args: &ScheduleArgs, config: &QuantizeConfig, plan: &Plan) -> String {
    let mut lines = header(args, config, plan);
    lines.push(String::new());
    lines.push(format!(
        "{:<6} {:<8} {:<7} {:<22} bits@step",
        "layer", "eigen", "final", "target"
    ));
    for l in &plan.layers {
        let eigen = l.eigenvalue.map_or("-".to_string(), |e| format!("{e}"));
        let final_bits = l.final_bits().map_or("-".to_string(), |b| b.to_string());
        let target = match l.target_step() {
            Some(step) => format!("{} bits at step {step}", l.spec.target_bits),
            None => format!("{} bits NOT REACHED", l.spec.target_bits),
        };
        let widths: Vec<String> = l.reached.iter().map(|(b, s)| format!("{b}@{s}")).collect();
        lines.push(format!(
            "{:<6} {:<8} {:<7} {:<22} {}",
            l.layer,
            eigen,
            final_bits,
            target,
            widths.join(" ")
        ));
    }
    let mut warnings: Vec<String> = plan
        .layers
        .iter()
        .filter(|l| l.target_step().is_none())
        .map(|l| warning(plan, l))
        .collect();
    lines.push(String::new());
    if warnings.is_empty() {
        lines.push(format!(
            "every layer reaches its target within {} steps",
            plan.steps
        ));
    } else {
        warnings.dedup();
        lines.extend(warnings);
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// The summary's first lines: the config, the schedule, the run and its notes.
fn header(args: &ScheduleArgs, config: &QuantizeConfig, plan: &Plan) -> Vec<String> {
    let eigen = match &args.eigenvalues {
        Some(_) => "fixed eigenvalues (--eigenvalues)",
        None => "eigenvalues off",
    };
    let timing = match config.deadline {
        Some(step) => format!("deadline step {step} (moq.deadline; quantize_period not used)"),
        None => format!("quantize_period {}", config.period),
    };
    let mut lines = vec![
        format!("config: {}", args.config.display()),
        format!(
            "schedule: {} → {} bits, {timing}, schedule_offset {}, {} groups, {}, {} rounding, {eigen}",
            config.start_bits,
            config.target_bits,
            config.schedule_offset,
            config.groups,
            config.quant_type.as_str(),
            config.rounding.as_str(),
        ),
        format!(
            "run: {} optimizer steps, {} layer(s)",
            plan.steps,
            plan.layers.len()
        ),
    ];
    if !config.enabled {
        lines.push("note: quantize_training.enabled is false: DeepSpeed and the MoQ optimizer wrapper would not quantize".into());
    }
    if config.eigenvalue.enabled && args.eigenvalues.is_none() {
        let effect = match config.deadline {
            Some(_) => {
                "places each layer's drops later by its measured eigenvalue, all before the deadline"
            }
            None => "stretches periods by measured eigenvalues",
        };
        lines.push(format!(
            "note: eigenvalue.enabled is true: the real schedule {effect}; planned here without \
             them (pass --eigenvalues to fix them)"
        ));
    }
    if let (Some(_), Some(step)) = (&args.eigenvalues, config.deadline) {
        lines.push(format!(
            "deadline: a layer of factor f = 1 + floor(4e) drops in the last 1/f of the \
             quantizing steps before step {step}"
        ));
    }
    lines
}

fn warning(plan: &Plan, l: &LayerPlan) -> String {
    let head = match l.final_bits() {
        None => format!(
            "warning: layer {}: the run ends before schedule_offset ({}): nothing is quantized",
            l.layer, plan.schedule_offset
        ),
        Some(bits) => format!(
            "warning: layer {} ends at {bits} bits, above its target of {}: reaching it takes {} steps, the run has {}",
            l.layer, l.spec.target_bits, l.steps_needed, plan.steps
        ),
    };
    let advice = match (plan.deadline, l.suggested_period) {
        (Some(deadline), _) => format!(
            "; the deadline (step {deadline}) is past the run's last step: set moq.deadline to at most {}",
            plan.steps.saturating_sub(1)
        ),
        (None, Some(p)) => format!("; quantize_period {p} or less reaches it in time (now {})", l.spec.period),
        (None, None) => "; no quantize_period reaches it in time: lower schedule_offset or start_bits, or train longer".into(),
    };
    format!("{head}{advice}")
}

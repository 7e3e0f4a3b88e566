//! MoQ on a small transformer encoder: is the second half of a token sequence a permutation of
//! the first half? (Answering needs attention: every token must be compared with the other
//! half.) The data are generated deterministically from a seed. The model (token + position
//! embeddings, 2 encoder layers, mean pooling, a linear head) is trained four ways at 8 and 4
//! bits, with one schedule per encoder layer (`encoder.layers.{i}`), over several seeds; prints
//! the test-accuracy table and each layer's final bits, and writes the table, with its figures,
//! to `target/results/results.md` (`--docs` regenerates `docs/results.md` and `docs/figures/`).
//!
//! `cargo run --release -p moq-examples --bin transformer`

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use moq_burn::MoqBackend;
use moq_burn::moq_core::export::MoqFile;
use moq_examples::permutation::{
    BATCH, Classifier, D_MODEL, LAYERS, LEN, LR, Probe, TEST, TRAIN, Task, VOCAB, accuracy,
    accuracy_of,
};
use moq_examples::{
    Experiment, Figures, QuantSetup, Results, Rng, Run, Variant, eigen_provider, eigen_summary,
    export_sizes, layer_widths, results_path, run_on, schedule_lines, schedule_note, train,
    variant_config,
};

/// Train a small transformer on a permutation task with and without MoQ.
#[derive(Parser, Debug)]
struct Args {
    /// Backend: ndarray, flex, tch (CPU), wgpu or cuda (all but ndarray need their feature).
    #[arg(long, default_value = "ndarray")]
    backend: String,
    /// Number of seeds per cell.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Optimizer steps per run.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Target bit widths, one column each.
    #[arg(long, value_delimiter = ',', default_value = "8,4")]
    targets: Vec<u32>,
    /// Where the table goes (a section of this markdown file; its figures go to `figures/`
    /// beside it).
    #[arg(long, default_value = "target/results/results.md")]
    out: PathBuf,
    /// Regenerate the published results instead: docs/results.md and docs/figures/.
    #[arg(long, conflicts_with = "out")]
    docs: bool,
}

fn run<B>(args: &Args, device: B::Device) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let train_set = Task::generate(TRAIN, 12_345);
    let test_set = Task::generate(TEST, 67_890);
    let setup = QuantSetup {
        steps: args.steps,
        groups: 8,
        start_bits: 12,
        reach_by: 0.6,
    };
    println!(
        "permutation task: {TRAIN} train / {TEST} test sequences of {LEN} tokens (vocabulary {VOCAB}); transformer: \
         d_model {D_MODEL}, {LAYERS} layers, 4 heads; Adam lr {LR}, batch {BATCH}, {} steps; quantize_groups {}; \
         one schedule per encoder layer (`encoder.layers.{{i}}`), the embeddings and head each their own",
        args.steps, setup.groups
    );
    // Every schedule must fit the run: fail before training anything.
    for &target in &args.targets {
        for variant in Variant::ALL {
            variant_config(variant, target, setup)?;
        }
    }
    let mut results = Results {
        targets: args.targets.clone(),
        cells: Vec::new(),
    };
    let mut notes = Vec::new();
    let mut schedules = Vec::new();
    // Seed 0's export files, and the widths second-order bits chose.
    let mut file_sizes: Vec<(Variant, u32, u64)> = Vec::new();
    let mut widths = Vec::new();
    let out = results_path(&args.out, args.docs);
    let mut figures = Figures::new("transformer", &out);
    for (column, &target) in args.targets.iter().enumerate() {
        for variant in Variant::ALL {
            if variant == Variant::FullPrecision && column > 0 {
                continue;
            }
            let config = variant_config(variant, target, setup)?;
            for seed in 0..args.seeds {
                B::seed(&device, seed);
                let model = Classifier::<B>::new(&device);
                let loss_fn = CrossEntropyLossConfig::new().init(&device);
                let batches = (TRAIN / BATCH) as u64;
                let loss = |model: &Classifier<B>, step: u64| {
                    let mut order: Vec<usize> = (0..TRAIN).collect();
                    Rng::new(seed * 1_000_003 + step / batches).shuffle(&mut order);
                    let b = (step % batches) as usize;
                    let (x, y) =
                        train_set.tensors::<B>(&order[b * BATCH..(b + 1) * BATCH], &device);
                    loss_fn.forward(model.forward(x), y)
                };
                // The probe: the first training batch of the run's seed.
                let (eigenvalues, history) = eigen_provider::<B, _>(
                    config.as_ref(),
                    || {
                        let mut order: Vec<usize> = (0..TRAIN).collect();
                        Rng::new(seed * 1_000_003).shuffle(&mut order);
                        Probe::new(&train_set, &order[..BATCH])
                    },
                    seed,
                )
                .unzip();
                let evaluate = |m: &Classifier<B>| accuracy(&m.valid(), &test_set, &device);
                // The plain MoQ run of seed 0 leaves as packed codes, checked below, and so does
                // the second-order one, whose file must be no larger.
                let exports = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/moq-exports");
                let export = match variant {
                    Variant::Moq if seed == 0 => {
                        Some(exports.join(format!("transformer-{target}bit.safetensors")))
                    }
                    Variant::MoqSecondOrder if seed == 0 => Some(
                        exports.join(format!("transformer-{target}bit-second-order.safetensors")),
                    ),
                    _ => None,
                };
                let run = Run {
                    steps: args.steps,
                    lr: LR,
                    eigenvalues,
                    evaluate: (seed == 0).then_some(&evaluate as &dyn Fn(&Classifier<B>) -> f64),
                    export: export.clone(),
                };
                let trained = train(
                    model,
                    config.clone(),
                    |moq| variant.customize(moq.layers("encoder.layers.{i}"), target),
                    run,
                    loss,
                )?;
                let acc = accuracy(&trained.model.valid(), &test_set, &device);
                results.add(variant, column, acc);
                if let Some(path) = &export {
                    // The same model type, every linear layer holding the exported codes: the
                    // same predictions as the fake-quantized model.
                    let file = MoqFile::load(path)?;
                    let quantized = Classifier::<B::InnerBackend>::load(&file, &device)?;
                    let from_codes = accuracy_of(|x| quantized.forward(x), &test_set, &device);
                    println!(
                        "      exported to {}: accuracy served from the codes {:.2}%, \
                         fake-quantized {:.2}%",
                        path.display(),
                        100.0 * from_codes,
                        100.0 * acc
                    );
                    if from_codes != acc {
                        bail!("the exported codes score {from_codes}, the trained model {acc}");
                    }
                    file_sizes.push((variant, target, std::fs::metadata(path)?.len()));
                    if variant == Variant::MoqSecondOrder {
                        widths.push(format!("{target} bits: {}", layer_widths(&trained)));
                    }
                }
                if seed == 0 {
                    figures.add(variant, target, config.as_ref(), &trained, args.steps)?;
                }
                let bits: Vec<String> = trained
                    .bits
                    .iter()
                    .map(|b| b.map_or("-".into(), |b| b.to_string()))
                    .collect();
                let label = if variant == Variant::FullPrecision {
                    "fp32".to_string()
                } else {
                    format!("{target}-bit")
                };
                println!(
                    "  {:<38} {label:<6} seed {seed}: test accuracy {:6.2}%  bits per layer [{}] ({:.1} s)",
                    variant.label(),
                    100.0 * acc,
                    bits.join(" "),
                    trained.seconds
                );
                if let Some(history) = &history {
                    println!("      {}", eigen_summary(history));
                }
                let scheduled = matches!(
                    variant,
                    Variant::Moq | Variant::MoqEigen | Variant::MoqSecondOrder
                );
                if let Some(cfg) = config.as_ref().filter(|_| seed == 0 && scheduled) {
                    notes.push(format!(
                        "{} at {target} bits: {}",
                        variant.label(),
                        schedule_note(cfg)
                    ));
                    let lines = schedule_lines(&trained, cfg.start_bits);
                    println!("      per-layer schedule (bits@step):");
                    for line in &lines {
                        println!("        {line}");
                    }
                    schedules.push(format!(
                        "{} at {target} bits (seed 0):\n\n```text\n{}\n```",
                        variant.label(),
                        lines.join("\n")
                    ));
                }
            }
        }
        figures.finish_target(target, &format!("permutation task, {target} bits (seed 0)"))?;
    }
    let table = results.markdown();
    println!(
        "\nTest accuracy (%), mean ± std over {} seeds:\n\n{table}",
        args.seeds
    );
    let command = format!(
        "cargo run --release -p moq-examples --bin transformer -- --seeds {} --steps {} --targets {}",
        args.seeds,
        args.steps,
        args.targets
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let sizes = export_sizes(&file_sizes);
    println!("\n{sizes}\nsecond-order widths: {}", widths.join("; "));
    let body = format!(
        "## Permutation task, transformer encoder ({LAYERS} layers, d_model {D_MODEL})\n\nProduced by `{command}` \
         (backend {}).\n\nIs the second half of a {LEN}-token sequence a permutation of the first? {TRAIN} train / {TEST} \
         test sequences generated from fixed seeds; {} Adam steps (lr {LR}, batch {BATCH}); quantize_groups {}; layers \
         from the pattern `encoder.layers.{{i}}` (the two embeddings and the head are layers of their own). \
         Schedules: {}. MoQ's period is the planner's, to reach the target by 60% of training; with eigenvalues a \
         deadline at 60% of training places the drops instead, the sensitive layers' later; eigenvalues are computed \
         on a fixed probe batch (the run's first batch) before each drop. Second-order bits: after the warm-up each \
         layer's width is chosen from {{2, 3, 4, 5, 6, 8}} to minimise Σ λ·‖Q(W) − W‖² within the uniform export's \
         bytes; widths chosen (seed 0, per layer): {}. {sizes} Test accuracy in %, mean ± std over {} seeds:\n\n{table}\n\
         Per-layer schedules as they ran (bits@step), like DeepSpeed's figure of eigenvalue-driven schedules:\n\n{}",
        args.backend,
        args.steps,
        setup.groups,
        notes.join("; "),
        widths.join("; "),
        args.seeds,
        schedules.join("\n\n")
    );
    figures.publish(&out, "transformer", &body)?;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    run_on(&args.backend, &args)
}

impl Experiment for Args {
    fn run<B>(&self, device: B::Device) -> Result<()>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend,
    {
        run::<B>(self, device)
    }
}

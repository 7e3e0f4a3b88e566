//! MoQ on the UCI handwritten digits: an MLP (64 → 128 → 128 → 10) trained five ways (full
//! precision, basic QAT, MoQ, MoQ with mixing, MoQ with Hessian eigenvalues) at 8, 4 and 2 bits
//! over several seeds; prints the test-accuracy table and writes it, with its figures, to
//! `target/results/results.md` (`--docs` regenerates `docs/results.md` and `docs/figures/`).
//!
//! `cargo run --release -p moq-examples --bin digits`
//!
//! `--learner DIR` trains one MoQ run through burn-train's `Learner` instead, with MoQ's bits
//! and mixing ratio among its metrics.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::data::dataloader::DataLoaderBuilder;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};
use clap::Parser;
use moq_burn::moq_core::export::MoqFile;
use moq_burn::{
    BitsMetric, MixingMetric, Moq, MoqBackend, Unservable, load_codes, load_dequantized,
};
use moq_examples::digits::{BATCH, Digits, Mlp, Probe, Stack, TRAIN, accuracy};
use moq_examples::{
    EpochLines, Experiment, Figures, QuantSetup, Results, Rng, Run, Variant, eigen_provider,
    eigen_summary, export_sizes, layer_widths, results_path, run_on, schedule_note, train,
    variant_config,
};

/// Train an MLP on UCI digits with and without MoQ and compare test accuracy.
#[derive(Parser, Debug)]
struct Args {
    /// Backend: ndarray, flex, tch (CPU), wgpu or cuda (all but ndarray need their feature).
    #[arg(long, default_value = "ndarray")]
    backend: String,
    /// Number of seeds per cell.
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Training epochs.
    #[arg(long, default_value_t = 40)]
    epochs: u64,
    /// Target bit widths, one column each.
    #[arg(long, value_delimiter = ',', default_value = "8,4,2")]
    targets: Vec<u32>,
    /// Where the table goes (a section of this markdown file; its figures go to `figures/`
    /// beside it).
    #[arg(long, default_value = "target/results/results.md")]
    out: PathBuf,
    /// Regenerate the published results instead: docs/results.md and docs/figures/.
    #[arg(long, conflicts_with = "out")]
    docs: bool,
    /// Instead of the table: train one MoQ + mixing run (the first target, seed 0) through burn-train's
    /// `Learner`, whose progress output shows MoQ's bits and mixing ratio as metrics; its
    /// artifacts go to this directory.
    #[arg(long)]
    learner: Option<PathBuf>,
    /// The UCI digits file (default: the copy in the examples crate, `data/digits.csv.gz`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where each target's MoQ export goes (default: `target/moq-exports/` of the workspace).
    #[arg(long)]
    exports: Option<PathBuf>,
}

/// One MoQ run through burn-train's `Learner`, with MoQ's metrics on its dashboard.
fn run_learner<B>(
    args: &Args,
    dir: &Path,
    data: (Digits, Digits),
    setup: QuantSetup,
    device: B::Device,
) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let (train_set, test_set) = data;
    let target = args.targets[0];
    let Some(config) = variant_config(Variant::MoqMixing, target, setup)? else {
        bail!("MoQ has a config");
    };
    println!(
        "one MoQ + mixing run ({} → {target} bits, quantize_period {}) through burn-train's Learner; artifacts in {}",
        config.start_bits,
        config.period,
        dir.display()
    );
    B::seed(&device, 0);
    let model = Mlp::<B>::new(&device);
    let optim = Moq::new(config).init(AdamConfig::new().init(), &model)?;
    let status = optim.status();
    let train = DataLoaderBuilder::new(Stack)
        .batch_size(BATCH)
        .shuffle(0)
        .build(train_set.items());
    let valid = DataLoaderBuilder::new(Stack)
        .batch_size(BATCH)
        .build(test_set.items());
    let result = SupervisedTraining::new(dir, train, valid)
        .num_epochs(args.epochs as usize)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_valid_numeric(AccuracyMetric::new())
        .metric_train_numeric(BitsMetric::new(status.clone()))
        .metric_train_numeric(MixingMetric::new(status.clone()))
        .renderer(EpochLines::default())
        .summary()
        .launch(Learner::new(model, optim, 2e-3));
    let acc = accuracy(|x| result.model.forward(x), &test_set, &device);
    let bits = status.snapshot().bits;
    println!(
        "test accuracy {:.2}%, bits per layer {bits:?}; metrics logged under {}",
        100.0 * acc,
        dir.display()
    );
    Ok(())
}

fn run<B>(args: &Args, device: B::Device) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = args.data.clone().unwrap_or_else(Digits::default_path);
    let (train_set, test_set) = Digits::load(&path)?.split();
    let exports = args
        .exports
        .clone()
        .unwrap_or_else(|| manifest.join("../target/moq-exports"));
    let batches = TRAIN.div_ceil(BATCH) as u64;
    let steps = args.epochs * batches;
    let setup = QuantSetup {
        steps,
        groups: 16,
        start_bits: 12,
        reach_by: 0.6,
    };
    println!(
        "UCI digits: {} train / {} test, MLP 64-128-128-10, Adam lr 2e-3, batch {BATCH}, {} epochs = {steps} steps, \
         quantize_groups {}, MoQ from {} bits",
        train_set.len(),
        test_set.len(),
        args.epochs,
        setup.groups,
        setup.start_bits
    );
    if let Some(dir) = &args.learner {
        return run_learner::<B>(args, dir, (train_set, test_set), setup, device);
    }
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
    let mut schedules = Vec::new();
    // Seed 0's export files, and the widths second-order bits chose.
    let mut file_sizes: Vec<(Variant, u32, u64)> = Vec::new();
    let mut widths = Vec::new();
    let out = results_path(&args.out, args.docs);
    let mut figures = Figures::new("digits", &out);
    for (column, &target) in args.targets.iter().enumerate() {
        for variant in Variant::ALL {
            if variant == Variant::FullPrecision && column > 0 {
                continue;
            }
            let config = variant_config(variant, target, setup)?;
            if let Some(cfg) = config.as_ref().filter(|_| {
                matches!(
                    variant,
                    Variant::Moq | Variant::MoqEigen | Variant::MoqSecondOrder
                )
            }) {
                schedules.push(format!(
                    "{} at {target} bits: {}",
                    variant.label(),
                    schedule_note(cfg)
                ));
            }
            for seed in 0..args.seeds {
                B::seed(&device, seed);
                let model = Mlp::<B>::new(&device);
                let loss_fn = CrossEntropyLossConfig::new().init(&device);
                let loss = |model: &Mlp<B>, step: u64| {
                    let epoch = step / batches;
                    let mut order: Vec<usize> = (0..TRAIN).collect();
                    Rng::new(seed * 1_000_003 + epoch).shuffle(&mut order);
                    let b = (step % batches) as usize;
                    let rows = &order[b * BATCH..((b + 1) * BATCH).min(TRAIN)];
                    let (x, y) = train_set.tensors::<B>(rows, &device);
                    loss_fn.forward(model.forward(x), y)
                };
                // The probe: the first training batch of the run's seed.
                let (eigenvalues, history) = eigen_provider::<B, _>(
                    config.as_ref(),
                    || {
                        let mut order: Vec<usize> = (0..TRAIN).collect();
                        Rng::new(seed * 1_000_003).shuffle(&mut order);
                        let (x, y) = train_set.tensors::<B>(&order[..BATCH], &device);
                        Probe {
                            x: x.into_data(),
                            y: y.into_data(),
                        }
                    },
                    seed,
                )
                .unzip();
                let evaluate = |m: &Mlp<B>| accuracy(|x| m.valid().forward(x), &test_set, &device);
                // The plain MoQ run of seed 0 leaves as packed codes, checked below, and so does
                // the second-order one, whose file must be no larger.
                let export = match variant {
                    Variant::Moq if seed == 0 => {
                        Some(exports.join(format!("digits-{target}bit.safetensors")))
                    }
                    Variant::MoqSecondOrder if seed == 0 => {
                        Some(exports.join(format!("digits-{target}bit-second-order.safetensors")))
                    }
                    _ => None,
                };
                let run = Run {
                    steps,
                    lr: 2e-3,
                    eigenvalues,
                    evaluate: (seed == 0).then_some(&evaluate as &dyn Fn(&Mlp<B>) -> f64),
                    export: export.clone(),
                };
                let trained = train(
                    model,
                    config.clone(),
                    |moq| variant.customize(moq, target),
                    run,
                    loss,
                )?;
                let valid = trained.model.valid();
                let acc = accuracy(|x| valid.forward(x), &test_set, &device);
                results.add(variant, column, acc);
                if let Some(path) = &export {
                    // The codes, served by the model's own MoqLinear layers (and dequantized
                    // into a fresh model), must score exactly the same.
                    let file = MoqFile::load(path)?;
                    let mut quantized = Mlp::<B::InnerBackend>::new(&device);
                    load_codes(&mut quantized, &file, Unservable::Refuse)?;
                    let from_codes = accuracy(|x| quantized.forward(x), &test_set, &device);
                    let reloaded = load_dequantized(Mlp::<B::InnerBackend>::new(&device), &file)?;
                    let dequantized = accuracy(|x| reloaded.forward(x), &test_set, &device);
                    let (stored, full) = file.quantized.iter().fold((0, 0), |(s, f), e| {
                        (s + e.packed.size_bytes(), f + 4 * e.packed.len)
                    });
                    println!(
                        "      exported to {} ({:.1}x smaller weights): accuracy served from the codes {:.2}%, fake-quantized {:.2}%",
                        path.display(),
                        full as f64 / stored as f64,
                        100.0 * from_codes,
                        100.0 * acc
                    );
                    if from_codes != acc || dequantized != acc {
                        bail!(
                            "the exported codes score {from_codes} served by MoqLinear layers and \
                             {dequantized} dequantized, the trained model {acc}"
                        );
                    }
                    file_sizes.push((variant, target, std::fs::metadata(path)?.len()));
                    if variant == Variant::MoqSecondOrder {
                        widths.push(format!("{target} bits: {}", layer_widths(&trained)));
                    }
                }
                if seed == 0 {
                    figures.add(variant, target, config.as_ref(), &trained, steps)?;
                }
                let bits = trained
                    .bits
                    .iter()
                    .map(|b| b.map_or("-".into(), |b| b.to_string()))
                    .collect::<Vec<_>>()
                    .join("/");
                let label = if variant == Variant::FullPrecision {
                    "fp32".to_string()
                } else {
                    format!("{target}-bit")
                };
                println!(
                    "  {:<38} {label:<6} seed {seed}: test accuracy {:6.2}%  final bits {:<9} ({:.1} s)",
                    variant.label(),
                    100.0 * acc,
                    if bits.is_empty() { "-".into() } else { bits },
                    trained.seconds
                );
                if let Some(history) = &history {
                    println!("      {}", eigen_summary(history));
                }
            }
        }
        figures.finish_target(target, &format!("UCI digits, {target} bits (seed 0)"))?;
    }
    let table = results.markdown();
    println!(
        "\nTest accuracy (%), mean ± std over {} seeds:\n\n{table}",
        args.seeds
    );
    let command = format!(
        "cargo run --release -p moq-examples --bin digits -- --seeds {} --epochs {} --targets {}",
        args.seeds,
        args.epochs,
        args.targets
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let sizes = export_sizes(&file_sizes);
    println!("\n{sizes}\nsecond-order widths: {}", widths.join("; "));
    let body = format!(
        "## UCI digits, MLP 64-128-128-10\n\nProduced by `{command}` (backend {}).\n\n{steps} Adam steps (lr 2e-3, batch {BATCH}), \
         {} train / {} test images (fixed split), quantize_groups {}. Schedules (MoQ: the planner's period to reach the \
         target by 60% of training; with eigenvalues: a deadline at 60% of training, sensitive layers dropping later): {}. \
         Eigenvalues are computed on a fixed probe batch before each drop. Mixing uses a change ratio of 2/period. \
         Second-order bits: after the warm-up each layer's width is chosen from {{2, 3, 4, 5, 6, 8}} to minimise \
         Σ λ·‖Q(W) − W‖² within the uniform export's bytes; widths chosen (seed 0, per layer): {}. {sizes} \
         Test accuracy in %, mean ± std over {} seeds:\n\n{table}",
        args.backend,
        train_set.len(),
        test_set.len(),
        setup.groups,
        schedules.join("; "),
        widths.join("; "),
        args.seeds
    );
    figures.publish(&out, "digits", &body)?;
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

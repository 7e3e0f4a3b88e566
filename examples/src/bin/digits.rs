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
    BitsMetric, EigenHistory, MixingMetric, Moq, MoqBackend, Unservable, load_codes,
    load_dequantized,
};
use moq_examples::digits::{BATCH, Digits, Mlp, Probe, Stack, TRAIN, accuracy};
use moq_examples::{
    EpochLines, Experiment, ExportNotes, Figures, QuantSetup, Results, Rng, Run, TableCell,
    Trained, Variant, check_schedules, eigen_provider, eigen_summary, export_path, results_path,
    run_on, schedule_note, train, variant_config,
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

/// Batches per epoch (the last one short).
const BATCHES: u64 = TRAIN.div_ceil(BATCH) as u64;

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
    let steps = args.epochs * BATCHES;
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
    check_schedules(&args.targets, setup)?;
    Session::<B>::new(args, device, (train_set, test_set), setup, exports).table()
}

/// The table's runs: what they share (the data, the setup) and what they gather.
struct Session<'a, B: AutodiffBackend> {
    args: &'a Args,
    device: B::Device,
    train_set: Digits,
    test_set: Digits,
    setup: QuantSetup,
    /// Where seed 0's exports go.
    exports: PathBuf,
    results: Results,
    /// How the scheduled variants' schedules run, for the table's notes.
    schedules: Vec<String>,
    /// Seed 0's export files, and the widths second-order bits chose.
    files: ExportNotes,
    figures: Figures,
    /// The markdown file the table goes to.
    out: PathBuf,
}

impl<'a, B> Session<'a, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    /// The runs of `args`' table on `device`, before any has trained.
    fn new(
        args: &'a Args,
        device: B::Device,
        (train_set, test_set): (Digits, Digits),
        setup: QuantSetup,
        exports: PathBuf,
    ) -> Self {
        let out = results_path(&args.out, args.docs);
        Self {
            args,
            device,
            train_set,
            test_set,
            setup,
            exports,
            results: Results {
                targets: args.targets.clone(),
                cells: Vec::new(),
            },
            schedules: Vec::new(),
            files: ExportNotes::default(),
            figures: Figures::new("digits", &out),
            out,
        }
    }

    /// Trains every cell of the table, a target's column after another, and publishes it.
    fn table(mut self) -> Result<()> {
        for (column, &target) in self.args.targets.iter().enumerate() {
            for cell in TableCell::column(column, target, self.setup)? {
                self.cell(&cell)?;
            }
            let title = format!("UCI digits, {target} bits (seed 0)");
            self.figures.finish_target(target, &title)?;
        }
        self.publish()
    }

    /// Trains and records the cell's runs, one per seed.
    fn cell(&mut self, cell: &TableCell) -> Result<()> {
        let (variant, target) = (cell.variant, cell.target);
        if let Some(cfg) = cell.config.as_ref().filter(|_| variant.notes_schedule()) {
            self.schedules.push(format!(
                "{} at {target} bits: {}",
                variant.label(),
                schedule_note(cfg)
            ));
        }
        for seed in 0..self.args.seeds {
            let export = export_path(&self.exports, "digits", variant, target, seed);
            let (trained, history) = self.train_seed(cell, seed, export.clone())?;
            self.record(cell, seed, &trained, export.as_deref())?;
            if let Some(history) = &history {
                println!("      {}", eigen_summary(history));
            }
        }
        Ok(())
    }

    /// Trains the cell's run of `seed`, exported to `export` when given (seed 0's plain MoQ
    /// and second-order runs leave as packed codes, checked by [`Self::check_export`]).
    fn train_seed(
        &self,
        cell: &TableCell,
        seed: u64,
        export: Option<PathBuf>,
    ) -> Result<(Trained<Mlp<B>>, Option<EigenHistory>)> {
        let device = &self.device;
        B::seed(device, seed);
        let model = Mlp::<B>::new(device);
        let loss_fn = CrossEntropyLossConfig::new().init(device);
        let loss = |model: &Mlp<B>, step: u64| {
            let epoch = step / BATCHES;
            let mut order: Vec<usize> = (0..TRAIN).collect();
            Rng::new(seed * 1_000_003 + epoch).shuffle(&mut order);
            let b = (step % BATCHES) as usize;
            let rows = &order[b * BATCH..((b + 1) * BATCH).min(TRAIN)];
            let (x, y) = self.train_set.tensors::<B>(rows, device);
            loss_fn.forward(model.forward(x), y)
        };
        let (eigenvalues, history) =
            eigen_provider::<B, _>(cell.config.as_ref(), || self.probe(seed), seed).unzip();
        let evaluate = |m: &Mlp<B>| accuracy(|x| m.valid().forward(x), &self.test_set, device);
        let run = Run {
            steps: self.setup.steps,
            lr: 2e-3,
            eigenvalues,
            evaluate: (seed == 0).then_some(&evaluate as &dyn Fn(&Mlp<B>) -> f64),
            export,
        };
        let (variant, target) = (cell.variant, cell.target);
        let customize = |moq| variant.customize(moq, target);
        let trained = train(model, cell.config.clone(), customize, run, loss)?;
        Ok((trained, history))
    }

    /// The eigenvalue probe of `seed`: the first training batch of the run's seed.
    fn probe(&self, seed: u64) -> Probe {
        let mut order: Vec<usize> = (0..TRAIN).collect();
        Rng::new(seed * 1_000_003).shuffle(&mut order);
        let (x, y) = self.train_set.tensors::<B>(&order[..BATCH], &self.device);
        Probe {
            x: x.into_data(),
            y: y.into_data(),
        }
    }

    /// Scores a trained run, checks its export (at `export`, if any), keeps seed 0's curves
    /// and prints the run's line.
    fn record(
        &mut self,
        cell: &TableCell,
        seed: u64,
        trained: &Trained<Mlp<B>>,
        export: Option<&Path>,
    ) -> Result<()> {
        let (variant, target) = (cell.variant, cell.target);
        let valid = trained.model.valid();
        let acc = accuracy(|x| valid.forward(x), &self.test_set, &self.device);
        self.results.add(variant, cell.column, acc);
        if let Some(path) = export {
            self.check_export(path, acc)?;
            self.files.record(variant, target, path, trained)?;
        }
        if seed == 0 {
            let steps = self.setup.steps;
            self.figures
                .add(variant, target, cell.config.as_ref(), trained, steps)?;
        }
        let bits = trained.bit_labels().join("/");
        println!(
            "  {:<38} {:<6} seed {seed}: test accuracy {:6.2}%  final bits {:<9} ({:.1} s)",
            variant.label(),
            cell.label(),
            100.0 * acc,
            if bits.is_empty() { "-".into() } else { bits },
            trained.seconds
        );
        Ok(())
    }

    /// The codes exported to `path`, served by the model's own MoqLinear layers (and
    /// dequantized into a fresh model), must score exactly the trained model's `acc`.
    fn check_export(&self, path: &Path, acc: f64) -> Result<()> {
        let (device, test_set) = (&self.device, &self.test_set);
        let file = MoqFile::load(path)?;
        let mut quantized = Mlp::<B::InnerBackend>::new(device);
        load_codes(&mut quantized, &file, Unservable::Refuse)?;
        let from_codes = accuracy(|x| quantized.forward(x), test_set, device);
        let reloaded = load_dequantized(Mlp::<B::InnerBackend>::new(device), &file)?;
        let dequantized = accuracy(|x| reloaded.forward(x), test_set, device);
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
        Ok(())
    }

    /// Prints the table and the exports' notes, and writes the table's section of `out` and
    /// its figures.
    fn publish(&self) -> Result<()> {
        let (args, setup) = (self.args, self.setup);
        let steps = setup.steps;
        let table = self.results.markdown();
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
        let (sizes, widths) = (self.files.sizes(), self.files.widths());
        println!("\n{sizes}\nsecond-order widths: {widths}");
        let body = format!(
            "## UCI digits, MLP 64-128-128-10\n\nProduced by `{command}` (backend {}).\n\n{steps} Adam steps (lr 2e-3, batch {BATCH}), \
             {} train / {} test images (fixed split), quantize_groups {}. Schedules (MoQ: the planner's period to reach the \
             target by 60% of training; with eigenvalues: a deadline at 60% of training, sensitive layers dropping later): {}. \
             Eigenvalues are computed on a fixed probe batch before each drop. Mixing uses a change ratio of 2/period. \
             Second-order bits: after the warm-up each layer's width is chosen from {{2, 3, 4, 5, 6, 8}} to minimise \
             Σ λ·‖Q(W) − W‖² within the uniform export's bytes; widths chosen (seed 0, per layer): {widths}. {sizes} \
             Test accuracy in %, mean ± std over {} seeds:\n\n{table}",
            args.backend,
            self.train_set.len(),
            self.test_set.len(),
            setup.groups,
            self.schedules.join("; "),
            args.seeds
        );
        self.figures.publish(&self.out, "digits", &body)
    }
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

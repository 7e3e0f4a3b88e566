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
use moq_burn::moq_core::export::MoqFile;
use moq_burn::{EigenHistory, Moq, MoqBackend};
use moq_examples::permutation::{
    BATCH, Classifier, D_MODEL, LAYERS, LEN, LR, Probe, TEST, TRAIN, Task, VOCAB, accuracy,
    accuracy_of,
};
use moq_examples::{
    Experiment, ExportNotes, Figures, QuantSetup, Results, Rng, Run, TableCell, Trained,
    check_schedules, eigen_provider, eigen_summary, export_path, results_path, run_on,
    schedule_lines, schedule_note, train,
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
    check_schedules(&args.targets, setup)?;
    Session::<B>::new(args, device, (train_set, test_set), setup).table()
}

/// The table's runs: what they share (the data, the setup) and what they gather.
struct Session<'a, B: AutodiffBackend> {
    args: &'a Args,
    device: B::Device,
    train_set: Task,
    test_set: Task,
    setup: QuantSetup,
    /// Where seed 0's exports go.
    exports: PathBuf,
    results: Results,
    /// How the scheduled variants' schedules run, for the table's notes.
    notes: Vec<String>,
    /// Their per-layer schedules as they ran (seed 0), for the table's section.
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
        (train_set, test_set): (Task, Task),
        setup: QuantSetup,
    ) -> Self {
        let out = results_path(&args.out, args.docs);
        Self {
            args,
            device,
            train_set,
            test_set,
            setup,
            exports: Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/moq-exports"),
            results: Results {
                targets: args.targets.clone(),
                cells: Vec::new(),
            },
            notes: Vec::new(),
            schedules: Vec::new(),
            files: ExportNotes::default(),
            figures: Figures::new("transformer", &out),
            out,
        }
    }

    /// Trains every cell of the table, a target's column after another, and publishes it.
    fn table(mut self) -> Result<()> {
        for (column, &target) in self.args.targets.iter().enumerate() {
            for cell in TableCell::column(column, target, self.setup)? {
                self.cell(&cell)?;
            }
            let title = format!("permutation task, {target} bits (seed 0)");
            self.figures.finish_target(target, &title)?;
        }
        self.publish()
    }

    /// Trains and records the cell's runs, one per seed.
    fn cell(&mut self, cell: &TableCell) -> Result<()> {
        for seed in 0..self.args.seeds {
            let export = export_path(
                &self.exports,
                "transformer",
                cell.variant,
                cell.target,
                seed,
            );
            let (trained, history) = self.train_seed(cell, seed, export.clone())?;
            self.record(cell, seed, &trained, export.as_deref())?;
            if let Some(history) = &history {
                println!("      {}", eigen_summary(history));
            }
            if seed == 0 {
                self.note_schedule(cell, &trained);
            }
        }
        Ok(())
    }

    /// Trains the cell's run of `seed`, exported to `export` when given (seed 0's plain MoQ
    /// and second-order runs leave as packed codes, checked by [`Self::record`]).
    fn train_seed(
        &self,
        cell: &TableCell,
        seed: u64,
        export: Option<PathBuf>,
    ) -> Result<(Trained<Classifier<B>>, Option<EigenHistory>)> {
        let device = &self.device;
        B::seed(device, seed);
        let model = Classifier::<B>::new(device);
        let loss_fn = CrossEntropyLossConfig::new().init(device);
        let batches = (TRAIN / BATCH) as u64;
        let loss = |model: &Classifier<B>, step: u64| {
            let mut order: Vec<usize> = (0..TRAIN).collect();
            Rng::new(seed * 1_000_003 + step / batches).shuffle(&mut order);
            let b = (step % batches) as usize;
            let rows = &order[b * BATCH..(b + 1) * BATCH];
            let (x, y) = self.train_set.tensors::<B>(rows, device);
            loss_fn.forward(model.forward(x), y)
        };
        // The probe: the first training batch of the run's seed.
        let probe = || {
            let mut order: Vec<usize> = (0..TRAIN).collect();
            Rng::new(seed * 1_000_003).shuffle(&mut order);
            Probe::new(&self.train_set, &order[..BATCH])
        };
        let (eigenvalues, history) =
            eigen_provider::<B, _>(cell.config.as_ref(), probe, seed).unzip();
        let evaluate = |m: &Classifier<B>| accuracy(&m.valid(), &self.test_set, device);
        let run = Run {
            steps: self.args.steps,
            lr: LR,
            eigenvalues,
            evaluate: (seed == 0).then_some(&evaluate as &dyn Fn(&Classifier<B>) -> f64),
            export,
        };
        let (variant, target) = (cell.variant, cell.target);
        let customize = |moq: Moq| variant.customize(moq.layers("encoder.layers.{i}"), target);
        let trained = train(model, cell.config.clone(), customize, run, loss)?;
        Ok((trained, history))
    }

    /// Scores a trained run, checks its export (at `export`, if any), keeps seed 0's curves
    /// and prints the run's line.
    fn record(
        &mut self,
        cell: &TableCell,
        seed: u64,
        trained: &Trained<Classifier<B>>,
        export: Option<&Path>,
    ) -> Result<()> {
        let (variant, target) = (cell.variant, cell.target);
        let (device, test_set) = (&self.device, &self.test_set);
        let acc = accuracy(&trained.model.valid(), test_set, device);
        self.results.add(variant, cell.column, acc);
        if let Some(path) = export {
            // The same model type, every linear layer holding the exported codes: the
            // same predictions as the fake-quantized model.
            let file = MoqFile::load(path)?;
            let quantized = Classifier::<B::InnerBackend>::load(&file, device)?;
            let from_codes = accuracy_of(|x| quantized.forward(x), test_set, device);
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
            self.files.record(variant, target, path, trained)?;
        }
        if seed == 0 {
            let steps = self.args.steps;
            self.figures
                .add(variant, target, cell.config.as_ref(), trained, steps)?;
        }
        println!(
            "  {:<38} {:<6} seed {seed}: test accuracy {:6.2}%  bits per layer [{}] ({:.1} s)",
            variant.label(),
            cell.label(),
            100.0 * acc,
            trained.bit_labels().join(" "),
            trained.seconds
        );
        Ok(())
    }

    /// Notes a scheduled variant's config and prints and keeps the per-layer schedule its
    /// seed-0 run followed.
    fn note_schedule(&mut self, cell: &TableCell, trained: &Trained<Classifier<B>>) {
        let (variant, target) = (cell.variant, cell.target);
        let Some(cfg) = cell.config.as_ref().filter(|_| variant.notes_schedule()) else {
            return;
        };
        self.notes.push(format!(
            "{} at {target} bits: {}",
            variant.label(),
            schedule_note(cfg)
        ));
        let lines = schedule_lines(trained, cfg.start_bits);
        println!("      per-layer schedule (bits@step):");
        for line in &lines {
            println!("        {line}");
        }
        self.schedules.push(format!(
            "{} at {target} bits (seed 0):\n\n```text\n{}\n```",
            variant.label(),
            lines.join("\n")
        ));
    }

    /// Prints the table and the exports' notes, and writes the table's section of `out` and
    /// its figures.
    fn publish(&self) -> Result<()> {
        let (args, setup) = (self.args, self.setup);
        let table = self.results.markdown();
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
        let (sizes, widths) = (self.files.sizes(), self.files.widths());
        println!("\n{sizes}\nsecond-order widths: {widths}");
        let body = format!(
            "## Permutation task, transformer encoder ({LAYERS} layers, d_model {D_MODEL})\n\nProduced by `{command}` \
             (backend {}).\n\nIs the second half of a {LEN}-token sequence a permutation of the first? {TRAIN} train / {TEST} \
             test sequences generated from fixed seeds; {} Adam steps (lr {LR}, batch {BATCH}); quantize_groups {}; layers \
             from the pattern `encoder.layers.{{i}}` (the two embeddings and the head are layers of their own). \
             Schedules: {}. MoQ's period is the planner's, to reach the target by 60% of training; with eigenvalues a \
             deadline at 60% of training places the drops instead, the sensitive layers' later; eigenvalues are computed \
             on a fixed probe batch (the run's first batch) before each drop. Second-order bits: after the warm-up each \
             layer's width is chosen from {{2, 3, 4, 5, 6, 8}} to minimise Σ λ·‖Q(W) − W‖² within the uniform export's \
             bytes; widths chosen (seed 0, per layer): {widths}. {sizes} Test accuracy in %, mean ± std over {} seeds:\n\n{table}\n\
             Per-layer schedules as they ran (bits@step), like DeepSpeed's figure of eigenvalue-driven schedules:\n\n{}",
            args.backend,
            args.steps,
            setup.groups,
            self.notes.join("; "),
            args.seeds,
            self.schedules.join("\n\n")
        );
        self.figures.publish(&self.out, "transformer", &body)
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

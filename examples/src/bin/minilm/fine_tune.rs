//! `minilm fine-tune`: the pretrained encoder fine-tuned on spam/ham five ways per target
//! width, every quantized model served from its export, and the table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cells::{Cell, Size, model_path};
use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use moq_burn::moq_core::export::MoqFile;
use moq_burn::{Moq, MoqBackend};
use moq_examples::minilm::spam::{CLASSES, Corpus, Mail};
use moq_examples::minilm::{
    BertConfig, Encoded, ModelDir, Probe, TextClassifier, TextEncoder, accuracy, labels, serve,
};
use moq_examples::{
    Cells, Experiment, QuantSetup, Results, Rng, Run, Variant, eigen_provider, eigen_summary,
    results_path, schedule_lines, schedule_note, train, variant_config, write_section,
};

/// Which parameters MoQ quantizes: every linear weight of the encoder (rank 2 under
/// `bert.encoder`); the embeddings, the layer norms, the biases and the head stay f32.
const ENCODER: &str = "bert.encoder";
/// One schedule (and one eigenvalue) per encoder layer.
const LAYERS: &str = "bert.encoder.layer.{i}";
/// Power iterations per layer and eigenvalue computation.
const EIGEN_ITERS: u32 = 10;
/// Eigenvalue computations per run, about (their spacing, `gas_boundary_resolution`); a minute
/// each here.
const EIGEN_RUNS: u64 = 5;
/// The same for `--quick`, which must finish within 20 minutes on 2 cores (11 measured).
const EIGEN_RUNS_QUICK: u64 = 4;
/// Optimizer steps per fine-tune of the full run.
const STEPS: u64 = 120;
/// The variants fine-tuned at each target, after the full-precision run and PTQ (the two
/// second-order ones with `--second-order` only).
const TRAINED: [Variant; 5] = [
    Variant::Qat,
    Variant::Moq,
    Variant::MoqEigen,
    Variant::QatSecondOrder,
    Variant::MoqSecondOrder,
];

/// Fine-tune all-MiniLM-L6-v2 on the SpamAssassin corpus with and without MoQ.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The model directory (`scripts/fetch-minilm` fills the default).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The corpus directory (`scripts/fetch-minilm` fills the default).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Backend: ndarray, flex, tch (CPU), wgpu or cuda (all but ndarray need their feature).
    #[arg(long, default_value = "ndarray")]
    pub backend: String,
    /// One seed, 4 bits only, fewer steps and test mails: about 11 minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Seeds per cell (default 3; 1 with --quick).
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed: the run fine-tunes seeds `first-seed .. first-seed + seeds`. Two
    /// processes split a table's seeds this way (`--seeds 2` beside `--first-seed 2 --seeds 1`),
    /// and a last run over all of them publishes it from their cells.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Optimizer steps per fine-tune (default 120; 60 with --quick).
    #[arg(long)]
    steps: Option<u64>,
    /// Target widths, one column each (default 8,4; 4 with --quick).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<u32>>,
    /// Held-out mails (default 1000; 300 with --quick).
    #[arg(long)]
    test: Option<usize>,
    /// Also fine-tune QAT + second-order bits and MoQ + second-order bits (each layer's width
    /// chosen from its eigenvalue, `Moq::auto_bits`, trained at it or scheduled down to it):
    /// per target and seed two more fine-tunes and their eigenvalue computations, about 10
    /// minutes each on 2 cores, so off unless asked for.
    #[arg(long)]
    second_order: bool,
    /// Mails per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens kept of each mail (subject first).
    #[arg(long, default_value_t = 32)]
    max_len: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// MoQ's highest start width (lowered until the schedule reaches its target by 60% of the
    /// run).
    #[arg(long, default_value_t = 12)]
    start_bits: u32,
    /// `quantize_groups`: 1152 makes groups of 128 weights in the attention's 384 × 384
    /// matrices and of 512 in the feed-forward's 384 × 1536.
    #[arg(long, default_value_t = 1152)]
    groups: usize,
    /// Where the table goes (a section of this markdown file).
    #[arg(long, default_value = "target/results/results.md")]
    out: PathBuf,
    /// Write the published table instead: the MiniLM section of docs/results.md.
    #[arg(long, conflicts_with = "out")]
    docs: bool,
    /// Run every fine-tune again, ignoring the results of earlier runs of this configuration
    /// (kept in `target/results/minilm-cells/`, so an interrupted run resumes where it stopped).
    #[arg(long)]
    fresh: bool,
}

impl Args {
    /// The arguments with `--quick`'s defaults (or the full run's) filled in.
    pub fn resolved(&self) -> Resolved {
        let quick = self.quick;
        Resolved {
            args: self.clone(),
            seeds: self.seeds.unwrap_or(if quick { 1 } else { 3 }),
            steps: self.steps.unwrap_or(if quick { 60 } else { STEPS }),
            targets: self
                .targets
                .clone()
                .unwrap_or(if quick { vec![4] } else { vec![8, 4] }),
            test: self.test.unwrap_or(if quick { 300 } else { 1000 }),
        }
    }
}

/// [`Args`] with every default decided.
pub struct Resolved {
    args: Args,
    seeds: u64,
    steps: u64,
    targets: Vec<u32>,
    test: usize,
}

impl Resolved {
    /// The variants fine-tuned at each target.
    fn trained(&self) -> impl Iterator<Item = Variant> + '_ {
        TRAINED.into_iter().filter(|&v| {
            self.args.second_order
                || !matches!(v, Variant::MoqSecondOrder | Variant::QatSecondOrder)
        })
    }
}

impl Experiment for Resolved {
    fn run<B>(&self, device: B::Device) -> Result<()>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend,
    {
        run::<B>(self, &device)
    }
}

/// Token ids and labels of `mails`.
fn encode(tokenizer: &TextEncoder, mails: &[Mail]) -> Result<(Encoded, Vec<i64>)> {
    let texts: Vec<&str> = mails.iter().map(|m| m.text.as_str()).collect();
    Ok((
        tokenizer.encode(&texts)?,
        mails.iter().map(|m| m.label).collect(),
    ))
}

/// The order of the training mails in epoch `epoch` of seed `seed`.
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed * 1_000_003 + epoch).shuffle(&mut order);
    order
}

fn run<B>(r: &Resolved, device: &B::Device) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let args = &r.args;
    let dir = ModelDir::new(args.model.as_deref());
    let config = dir.config()?;
    let tokenizer = dir.tokenizer(args.max_len)?;
    let corpus = Corpus::load(args.corpus.as_deref(), r.test)?;
    let (train_x, train_y) = encode(&tokenizer, &corpus.train)?;
    let (test_x, test_y) = encode(&tokenizer, &corpus.test)?;
    let spam = |y: &[i64]| y.iter().filter(|&&l| l == 1).count();
    let setup = QuantSetup {
        steps: r.steps,
        groups: args.groups,
        start_bits: args.start_bits,
        reach_by: 0.6,
    };
    println!(
        "all-MiniLM-L6-v2 on SpamAssassin: {} train mails ({} spam), {} test ({} spam), {} tokens each at most; \
         Adam lr {}, batch {}, {} steps (≈{:.1} epochs); quantize_groups {}; every linear weight of the encoder \
         quantized, one schedule per encoder layer; embeddings, layer norms, biases and head in f32",
        train_y.len(),
        spam(&train_y),
        test_y.len(),
        spam(&test_y),
        args.max_len,
        args.lr,
        args.batch,
        r.steps,
        (r.steps as usize * args.batch) as f64 / train_y.len() as f64,
        args.groups,
    );
    // Every schedule must fit the run: fail before training anything.
    let mut notes = Vec::new();
    for &target in &r.targets {
        for variant in r.trained() {
            let cfg = variant_config(variant, target, setup)?;
            if let Some(cfg) = cfg.filter(|_| variant != Variant::Qat) {
                notes.push(format!(
                    "{} at {target} bits: {}",
                    variant.label(),
                    schedule_note(&cfg)
                ));
            }
        }
    }
    println!("schedules: {}", notes.join("; "));
    let mut results = Results {
        targets: r.targets.clone(),
        cells: Vec::new(),
    };
    let mut sizes: Vec<(String, Size)> = Vec::new();
    let started = Instant::now();
    let exports = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/moq-exports");
    // Made once here: a fresh clone has no target/moq-exports, and PTQ saves into it.
    std::fs::create_dir_all(&exports)
        .with_context(|| format!("cannot create `{}`", exports.display()))?;
    let batches = (train_y.len() / args.batch) as u64;
    let runs = if args.quick {
        EIGEN_RUNS_QUICK
    } else {
        EIGEN_RUNS
    };
    let cells = Cells::new(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/results/minilm-cells"),
        &format!(
            "minilm fine-tune v1: steps {} test {} batch {} max_len {} lr {} start_bits {} groups {} \
             eigen_iters {EIGEN_ITERS} eigen_runs {runs} backend {}",
            r.steps,
            r.test,
            args.batch,
            args.max_len,
            args.lr,
            args.start_bits,
            args.groups,
            args.backend
        ),
        args.fresh,
    )?;
    // Seconds of the fine-tunes behind the table, this run's and earlier runs' cells.
    let mut spent = 0.0;
    for seed in args.first_seed..args.first_seed + r.seeds {
        // One fine-tune from the pretrained weights: the model, its test accuracy and, for a
        // quantized variant, the size of its export.
        let fine_tune = |variant: Variant, target: u32| -> Result<Tuned<B>> {
            B::seed(device, seed);
            let bert = dir.encoder::<B>(device)?;
            let model = TextClassifier::new(bert, &config, CLASSES, device);
            let mut cfg = variant_config(variant, target, setup)?;
            if let Some(cfg) = cfg.as_mut() {
                // Power iteration per encoder layer: at most EIGEN_ITERS Hessian-vector products
                // (finite differences, about 1 s each here), not DeepSpeed's 100.
                cfg.eigenvalue.max_iter = EIGEN_ITERS;
                // At most about EIGEN_RUNS computations a run: with a deadline, the drops of six
                // layers fall on different steps, and each would ask for one (nearly every
                // step of a short run, a minute each here).
                cfg.eigenvalue.gas_boundary_resolution = (r.steps / runs).max(1);
            }
            let loss_fn = CrossEntropyLossConfig::new().init(device);
            let loss = |model: &TextClassifier<B>, step: u64| {
                let order = epoch_order(train_y.len(), seed, step / batches);
                let b = (step % batches) as usize * args.batch;
                let rows = &order[b..b + args.batch];
                let batch = train_x.batch(rows, device);
                loss_fn.forward(model.forward(&batch), labels(&train_y, rows, device))
            };
            // The probe: the first 8 mails of the seed's first epoch.
            let (eigenvalues, history) = eigen_provider::<B, _>(
                cfg.as_ref(),
                || {
                    let rows = &epoch_order(train_y.len(), seed, 0)[..8];
                    let y = rows.iter().map(|&i| train_y[i]).collect();
                    Probe::new(config.clone(), CLASSES, train_x.select(rows), y)
                },
                seed,
            )
            .unzip();
            let label = if variant == Variant::FullPrecision {
                "fp32".to_string()
            } else {
                format!("{target}-bit")
            };
            let export = cfg.as_ref().map(|_| {
                exports.join(format!("minilm-{label}-{variant:?}-seed{seed}.safetensors"))
            });
            let run = Run {
                steps: r.steps,
                lr: args.lr,
                eigenvalues,
                evaluate: None,
                export: export.clone(),
            };
            let trained = train(
                model,
                cfg.clone(),
                |moq| variant.customize(moq.include(ENCODER).layers(LAYERS), target),
                run,
                loss,
            )?;
            let valid = trained.model.valid();
            let acc = accuracy(|b| valid.forward(b), &test_x, &test_y, device);
            let bits: Vec<String> = trained
                .bits
                .iter()
                .map(|b| b.map_or("-".into(), |b| b.to_string()))
                .collect();
            println!(
                "  {:<38} {label:<6} seed {seed}: test accuracy {:6.2}%  bits per layer [{}] ({:.0} s, {:.2} s/step)",
                variant.label(),
                100.0 * acc,
                bits.join(" "),
                trained.seconds,
                trained.seconds / r.steps as f64
            );
            if let Some(history) = &history {
                println!("      {}", eigen_summary(history));
            }
            if let Some(cfg) = cfg.as_ref().filter(|c| c.start_bits > c.target_bits) {
                for line in schedule_lines(&trained, cfg.start_bits) {
                    println!("      {line}");
                }
            }
            let size = match &export {
                Some(path) => {
                    // Read back from disk: what a user deploys is the file.
                    let file = MoqFile::load(path)?;
                    check_served::<B>(&file, path, &config, acc, &test_x, &test_y, device)?;
                    Some(Size::of(&file, path)?)
                }
                None => None,
            };
            let cell = Cell {
                accuracy: acc,
                size,
                seconds: trained.seconds,
            };
            Ok((trained.model, cell))
        };
        // Each fine-tune is a cell: done in an earlier run of this configuration, or run now.
        let name = |variant: Variant, target: u32| match variant {
            Variant::FullPrecision => format!("{variant:?}-seed{seed}"),
            _ => format!("{variant:?}-{target}bit-seed{seed}"),
        };
        let cached = |variant: Variant, target: u32| -> Result<Option<Cell>> {
            let cell: Option<Cell> = cells.get(&name(variant, target))?;
            if let Some(cell) = &cell {
                println!(
                    "  {:<38} {:<6} seed {seed}: test accuracy {:6.2}%  (done before: {})",
                    variant.label(),
                    if variant == Variant::FullPrecision {
                        "fp32".to_string()
                    } else {
                        format!("{target}-bit")
                    },
                    100.0 * cell.accuracy,
                    cells.dir().display()
                );
            }
            Ok(cell)
        };
        // PTQ rounds the full-precision model: kept beside the cells, trained again if gone.
        let mut ptq_missing = false;
        for &target in &r.targets {
            ptq_missing |= cells.get::<Cell>(&name(Variant::Ptq, target))?.is_none();
        }
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let model_path = model_path(&cells, seed);
        let mut full = None;
        let fp = match cached(Variant::FullPrecision, 32)? {
            Some(cell) if !ptq_missing => cell,
            Some(cell) if model_path.with_extension("mpk").exists() => {
                let model =
                    TextClassifier::new(dir.encoder::<B>(device)?, &config, CLASSES, device);
                full = Some(model.load_file(&model_path, &recorder, device)?);
                cell
            }
            _ => {
                let (model, cell) = fine_tune(Variant::FullPrecision, 32)?;
                // Whole or not at all: written under another name, then renamed.
                // (burn's recorder sets the extension, so the other name differs before it.)
                let partial = cells
                    .dir()
                    .join(format!("fp32-seed{seed}-partial{}", std::process::id()));
                model.clone().save_file(&partial, &recorder)?;
                std::fs::rename(
                    partial.with_extension("mpk"),
                    model_path.with_extension("mpk"),
                )?;
                cells.put(&name(Variant::FullPrecision, 32), &cell)?;
                full = Some(model);
                cell
            }
        };
        results.add(Variant::FullPrecision, 0, fp.accuracy);
        spent += fp.seconds;
        for &target in &r.targets {
            let column = column_of(&r.targets, target);
            let ptq = match cached(Variant::Ptq, target)? {
                Some(cell) => cell,
                None => {
                    let full = full
                        .as_ref()
                        .expect("trained or loaded when a PTQ cell is missing");
                    let cell = ptq_cell::<B>(
                        full, target, setup, seed, &exports, &config, &test_x, &test_y, device,
                    )?;
                    cells.put(&name(Variant::Ptq, target), &cell)?;
                    cell
                }
            };
            results.add(Variant::Ptq, column, ptq.accuracy);
            spent += ptq.seconds;
            if let Some(size) = ptq.size {
                sizes.push((format!("{} at {target} bits", Variant::Ptq.label()), size));
            }
            for variant in r.trained() {
                let cell = match cached(variant, target)? {
                    Some(cell) => cell,
                    None => {
                        let (_, cell) = fine_tune(variant, target)?;
                        cells.put(&name(variant, target), &cell)?;
                        cell
                    }
                };
                results.add(variant, column, cell.accuracy);
                spent += cell.seconds;
                if let Some(size) = cell.size {
                    sizes.push((format!("{} at {target} bits", variant.label()), size));
                }
            }
        }
    }
    let minutes = spent / 60.0;
    println!(
        "this run: {:.0} min; the table's fine-tunes: {minutes:.0} min (cells in {})",
        started.elapsed().as_secs_f64() / 60.0,
        cells.dir().display()
    );
    let f32_bytes = f32_size::<B>(&config, device);
    let table = results.markdown();
    println!(
        "\nTest accuracy (%), mean ± std over {} seeds ({minutes:.0} min):\n\n{table}",
        r.seeds
    );
    let mut size_lines = vec![format!(
        "| f32 model (every parameter) | {f32_bytes} | 1.00 | {} | 1.00 |",
        4 * linear_weights(&config)
    )];
    sizes.sort_by(|a, b| a.0.cmp(&b.0));
    sizes.dedup_by(|a, b| a.0 == b.0);
    for (what, size) in &sizes {
        size_lines.push(format!(
            "| {what} | {} | {:.3} | {} | {:.3} |",
            size.file,
            size.file as f64 / f32_bytes as f64,
            size.codes,
            size.codes as f64 / (4 * linear_weights(&config)) as f64
        ));
    }
    println!("{}", size_lines.join("\n"));
    publish(r, &table, &size_lines, &notes, minutes)
}

/// A fine-tuned classifier and its cell (test accuracy, export size, time).
type Tuned<B> = (TextClassifier<B>, Cell);

/// PTQ at `target` bits: the full-precision fine-tune rounded once, exported, and scored from
/// its codes.
#[allow(clippy::too_many_arguments)]
fn ptq_cell<B>(
    full: &TextClassifier<B>,
    target: u32,
    setup: QuantSetup,
    seed: u64,
    exports: &Path,
    config: &BertConfig,
    test_x: &Encoded,
    test_y: &[i64],
    device: &B::Device,
) -> Result<Cell>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let started = Instant::now();
    let cfg = variant_config(Variant::Ptq, target, setup)?.expect("PTQ has a config");
    let optim = Moq::new(cfg)
        .include(ENCODER)
        .layers(LAYERS)
        .init(AdamConfig::new().init(), full)?;
    let file = optim.export_at_target(full)?;
    let path = exports.join(format!("minilm-{target}bit-Ptq-seed{seed}.safetensors"));
    file.save(&path)?;
    let served = serve::<B::InnerBackend>(&file, config, CLASSES, device)?;
    let accuracy = accuracy(|b| served.forward(b), test_x, test_y, device);
    println!(
        "  {:<38} {target}-bit  seed {seed}: test accuracy {:6.2}%  (served from {})",
        Variant::Ptq.label(),
        100.0 * accuracy,
        path.display()
    );
    Ok(Cell {
        accuracy,
        size: Some(Size::of(&file, &path)?),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The results section of a table at `targets` after `steps`: `minilm-8-4bit` for 8 and 4
/// bits, `minilm-3bit-360steps` for 3 bits after 360 steps (the default steps go unnamed).
fn section_name(targets: &[u32], steps: u64) -> String {
    let mut name = format!("minilm-{}bit", list(targets, "-"));
    if steps != STEPS {
        name.push_str(&format!("-{steps}steps"));
    }
    name
}

/// `values` as text, `sep` between them.
fn list(values: &[u32], sep: &str) -> String {
    let text: Vec<String> = values.iter().map(u32::to_string).collect();
    text.join(sep)
}

fn column_of(targets: &[u32], target: u32) -> usize {
    targets.iter().position(|&t| t == target).unwrap_or(0)
}

/// The export `file` (read from `path`) served by its `MoqLinear` layers must score
/// `expected`, the accuracy of the fake-quantized model it came from.
fn check_served<B>(
    file: &MoqFile,
    path: &Path,
    config: &BertConfig,
    expected: f64,
    test_x: &Encoded,
    test_y: &[i64],
    device: &B::Device,
) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let served = serve::<B::InnerBackend>(file, config, CLASSES, device)?;
    let acc = accuracy(|b| served.forward(b), test_x, test_y, device);
    println!(
        "      served from {} by its MoqLinear layers: {:.2}% (fake-quantized {:.2}%)",
        path.display(),
        100.0 * acc,
        100.0 * expected
    );
    if acc != expected {
        bail!(
            "the export `{}` scores {acc} served from its codes, the fake-quantized model {expected}",
            path.display()
        );
    }
    Ok(())
}

impl Size {
    fn of(file: &MoqFile, path: &Path) -> Result<Self> {
        Ok(Self {
            file: std::fs::metadata(path)?.len(),
            codes: file
                .quantized
                .iter()
                .map(|e| e.packed.size_bytes() as u64)
                .sum(),
        })
    }
}

/// Weights of the encoder's linear layers (what MoQ quantizes).
fn linear_weights(c: &BertConfig) -> u64 {
    let (d, f) = (c.hidden_size as u64, c.intermediate_size as u64);
    c.num_hidden_layers as u64 * (4 * d * d + 2 * d * f)
}

/// Bytes of the classifier's parameters in f32.
fn f32_size<B: Backend>(config: &BertConfig, device: &B::Device) -> u64 {
    let bert = moq_examples::minilm::Bert::<B>::new(config, device);
    4 * TextClassifier::new(bert, config, CLASSES, device).num_params() as u64
}

fn publish(
    r: &Resolved,
    table: &str,
    sizes: &[String],
    notes: &[String],
    minutes: f64,
) -> Result<()> {
    let args = &r.args;
    let mut command = format!(
        "cargo run --release -p moq-examples --bin minilm -- fine-tune --seeds {} --steps {} --targets {} --test {}",
        r.seeds,
        r.steps,
        list(&r.targets, ","),
        r.test
    );
    if args.first_seed != 0 {
        command.push_str(&format!(" --first-seed {}", args.first_seed));
    }
    if args.second_order {
        command.push_str(" --second-order");
    }
    if args.quick {
        command.push_str(" (= --quick)");
    }
    let widths = match r.targets.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", list(rest, ", ")),
        _ => list(&r.targets, ""),
    };
    let body = format!(
        "## all-MiniLM-L6-v2 fine-tuned on SpamAssassin (spam or ham) at {widths} bits\n\nProduced by `{command}` (backend {}, \
         {minutes:.0} min of fine-tuning). The pretrained sentence-transformers encoder (6 layers, d_model 384) with mean pooling and \
         a linear head, fine-tuned with Adam (lr {}, batch {}, {} tokens per mail, {} steps) from the same \
         pretrained weights for every variant; {} held-out mails. Every linear weight of the encoder is quantized \
         (quantize_groups {}), one schedule per encoder layer (`{LAYERS}`); the embeddings, layer norms, biases and \
         the head stay f32. PTQ rounds the full-precision fine-tune once, with no training at low bits. Every \
         quantized model is scored again from its export, served by its `MoqLinear` layers (`load_codes`), and the run stops if the two \
         differ. Schedules: {}. Test accuracy in %, mean ± std over {} seeds:\n\n{table}\nExport sizes (bytes; \
         the encoder's linear weights are codes plus one f32 scale per group, everything else f32):\n\n\
         | model | file | ratio to f32 | encoder linear weights | ratio to f32 |\n|---|---|---|---|---|\n{}\n",
        args.backend,
        args.lr,
        args.batch,
        args.max_len,
        r.steps,
        r.test,
        args.groups,
        notes.join("; "),
        r.seeds,
        sizes.join("\n"),
    );
    // One section per set of widths and steps (`minilm-8-4bit`, `minilm-3bit`), so a column
    // run later publishes beside the table it did not rerun.
    let out = results_path(&args.out, args.docs);
    write_section(&out, &section_name(&r.targets, r.steps), &body)?;
    println!("wrote the table to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_set_of_widths_and_steps_has_its_own_section() {
        assert_eq!(section_name(&[8, 4], STEPS), "minilm-8-4bit");
        assert_eq!(section_name(&[3], STEPS), "minilm-3bit");
        assert_eq!(section_name(&[3], 360), "minilm-3bit-360steps");
        assert_eq!(list(&[8, 4, 3], ", "), "8, 4, 3");
    }
}

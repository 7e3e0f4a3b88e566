//! `minilm fine-tune`: the pretrained encoder fine-tuned on spam/ham five ways per target
//! width, every quantized model served from its export, and the table. A [`Session`] holds
//! what the fine-tunes share (the encoded corpus, the cells, the exports) and adds up their
//! cells; [`crate::publish`] writes the table.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::args::{EIGEN_ITERS, ENCODER, LAYERS, Resolved};
use crate::cells::{Cell, Size, model_path};
use crate::publish::publish;
use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use moq_burn::moq_core::QuantizeConfig;
use moq_burn::moq_core::export::MoqFile;
use moq_burn::{EigenHistory, Moq, MoqBackend};
use moq_examples::minilm::spam::{CLASSES, Corpus, Mail};
use moq_examples::minilm::{
    BertConfig, Encoded, ModelDir, Probe, TextClassifier, TextEncoder, accuracy, labels, serve,
};
use moq_examples::{
    Cells, Experiment, Results, Rng, Run, Trained, Variant, eigen_provider, eigen_summary,
    schedule_lines, train, variant_config,
};

impl Experiment for Resolved {
    /// Every seed's cells (full precision, then PTQ and each trained variant per target), then
    /// the tables, printed and published.
    fn run<B>(&self, device: B::Device) -> Result<()>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend,
    {
        let mut session = Session::<B>::open(self, &device)?;
        for seed in self.args.first_seed..self.args.first_seed + self.seeds {
            session.seed_cells(seed)?;
        }
        session.report()
    }
}

/// A fine-tuned classifier and its cell (test accuracy, export size, time).
type Tuned<B> = (TextClassifier<B>, Cell);

/// One `minilm fine-tune`: the corpus encoded once, where the exports and cells go, and what
/// the cells add up to so far.
struct Session<'a, B: Backend> {
    /// The run's arguments, defaults decided.
    r: &'a Resolved,
    /// Where every model lives.
    device: &'a B::Device,
    /// The pretrained model.
    dir: ModelDir,
    /// Its configuration.
    config: BertConfig,
    /// The training mails' tokens.
    train_x: Encoded,
    /// The training mails' labels.
    train_y: Vec<i64>,
    /// The held-out mails' tokens.
    test_x: Encoded,
    /// The held-out mails' labels.
    test_y: Vec<i64>,
    /// One schedule note per scheduled variant and target.
    notes: Vec<String>,
    /// When the fine-tunes began.
    started: Instant,
    /// Where the exports go.
    exports: PathBuf,
    /// Batches per epoch.
    batches: u64,
    /// The finished fine-tunes of this configuration.
    cells: Cells,
    /// Test accuracies, one column per target.
    results: Results,
    /// Every quantized variant's export size, named by variant and target.
    sizes: Vec<(String, Size)>,
    /// Seconds of the fine-tunes behind the table, this run's and earlier runs' cells.
    spent: f64,
}

impl<'a, B> Session<'a, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    /// Tokenizes the corpus, prints what the run trains on and its schedules (every schedule
    /// must fit the run: it fails before training anything), and opens the cells.
    fn open(r: &'a Resolved, device: &'a B::Device) -> Result<Self> {
        let args = &r.args;
        let dir = ModelDir::new(args.model.as_deref());
        let config = dir.config()?;
        let tokenizer = dir.tokenizer(args.max_len)?;
        let corpus = Corpus::load(args.corpus.as_deref(), r.test)?;
        let (train_x, train_y) = encode(&tokenizer, &corpus.train)?;
        let (test_x, test_y) = encode(&tokenizer, &corpus.test)?;
        print_data(r, &train_y, &test_y);
        let notes = r.schedule_notes()?;
        println!("schedules: {}", notes.join("; "));
        let started = Instant::now();
        let exports = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/moq-exports");
        // Made once here: a fresh clone has no target/moq-exports, and PTQ saves into it.
        std::fs::create_dir_all(&exports)
            .with_context(|| format!("cannot create `{}`", exports.display()))?;
        let batches = (train_y.len() / args.batch) as u64;
        let cells = r.cells()?;
        Ok(Self {
            r,
            device,
            dir,
            config,
            train_x,
            train_y,
            test_x,
            test_y,
            notes,
            started,
            exports,
            batches,
            cells,
            results: Results {
                targets: r.targets.clone(),
                cells: Vec::new(),
            },
            sizes: Vec::new(),
            spent: 0.0,
        })
    }

    /// The cells of `seed`: full precision, then at each target PTQ and every trained
    /// variant, each done in an earlier run of this configuration or run now, and added up.
    fn seed_cells(&mut self, seed: u64) -> Result<()> {
        let (fp, full) = self.full_precision(seed)?;
        self.results.add(Variant::FullPrecision, 0, fp.accuracy);
        self.spent += fp.seconds;
        let r = self.r;
        for &target in &r.targets {
            let column = column_of(&r.targets, target);
            let ptq = self.cell(Variant::Ptq, target, seed, |s| {
                let full = full
                    .as_ref()
                    .expect("trained or loaded when a PTQ cell is missing");
                s.ptq(full, target, seed)
            })?;
            self.add(Variant::Ptq, column, target, &ptq);
            for variant in r.trained() {
                let cell = self.cell(variant, target, seed, |s| {
                    Ok(s.fine_tune(variant, target, seed)?.1)
                })?;
                self.add(variant, column, target, &cell);
            }
        }
        Ok(())
    }

    /// Adds `cell` (of `variant` at `target`, in `column`) to the table and the sizes.
    fn add(&mut self, variant: Variant, column: usize, target: u32, cell: &Cell) {
        self.results.add(variant, column, cell.accuracy);
        self.spent += cell.seconds;
        if let Some(size) = cell.size {
            self.sizes
                .push((format!("{} at {target} bits", variant.label()), size));
        }
    }

    /// The cell of `variant` at `target` for `seed`: done in an earlier run of this
    /// configuration, or made now by `make` and kept.
    fn cell(
        &self,
        variant: Variant,
        target: u32,
        seed: u64,
        make: impl FnOnce(&Self) -> Result<Cell>,
    ) -> Result<Cell> {
        if let Some(cell) = self.cached(variant, target, seed)? {
            return Ok(cell);
        }
        let cell = make(self)?;
        self.cells.put(&cell_name(variant, target, seed), &cell)?;
        Ok(cell)
    }

    /// The cell of `variant` at `target` for `seed` if an earlier run of this configuration
    /// finished it (and a line saying so).
    fn cached(&self, variant: Variant, target: u32, seed: u64) -> Result<Option<Cell>> {
        let cell: Option<Cell> = self.cells.get(&cell_name(variant, target, seed))?;
        if let Some(cell) = &cell {
            println!(
                "  {:<38} {:<6} seed {seed}: test accuracy {:6.2}%  (done before: {})",
                variant.label(),
                width_label(variant, target),
                100.0 * cell.accuracy,
                self.cells.dir().display()
            );
        }
        Ok(cell)
    }

    /// The full-precision cell of `seed`, and its model when a PTQ cell is missing (PTQ rounds
    /// it): kept beside the cells, fine-tuned again if gone.
    fn full_precision(&self, seed: u64) -> Result<(Cell, Option<TextClassifier<B>>)> {
        let mut ptq_missing = false;
        for &target in &self.r.targets {
            let name = cell_name(Variant::Ptq, target, seed);
            ptq_missing |= self.cells.get::<Cell>(&name)?.is_none();
        }
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let model_path = model_path(&self.cells, seed);
        match self.cached(Variant::FullPrecision, 32, seed)? {
            Some(cell) if !ptq_missing => Ok((cell, None)),
            Some(cell) if model_path.with_extension("mpk").exists() => {
                let bert = self.dir.encoder::<B>(self.device)?;
                let model = TextClassifier::new(bert, &self.config, CLASSES, self.device);
                let full = model.load_file(&model_path, &recorder, self.device)?;
                Ok((cell, Some(full)))
            }
            _ => {
                let (model, cell) = self.fine_tune(Variant::FullPrecision, 32, seed)?;
                self.keep_full(&model, &cell, seed)?;
                Ok((cell, Some(model)))
            }
        }
    }

    /// Keeps the full-precision `model` of `seed` beside the cells, whole or not at all (written
    /// under another name, then renamed), then its `cell`.
    fn keep_full(&self, model: &TextClassifier<B>, cell: &Cell, seed: u64) -> Result<()> {
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        // burn's recorder sets the extension, so the other name differs before it.
        let partial = self
            .cells
            .dir()
            .join(format!("fp32-seed{seed}-partial{}", std::process::id()));
        model.clone().save_file(&partial, &recorder)?;
        std::fs::rename(
            partial.with_extension("mpk"),
            model_path(&self.cells, seed).with_extension("mpk"),
        )?;
        self.cells
            .put(&cell_name(Variant::FullPrecision, 32, seed), cell)
    }

    /// One fine-tune of `seed` from the pretrained weights: the model, its test accuracy and,
    /// for a quantized variant, the size of its export (served and checked first).
    fn fine_tune(&self, variant: Variant, target: u32, seed: u64) -> Result<Tuned<B>> {
        let device = self.device;
        B::seed(device, seed);
        let bert = self.dir.encoder::<B>(device)?;
        let model = TextClassifier::new(bert, &self.config, CLASSES, device);
        let cfg = self.quantize_config(variant, target)?;
        let loss_fn = CrossEntropyLossConfig::new().init(device);
        let loss = |model: &TextClassifier<B>, step: u64| {
            let order = epoch_order(self.train_y.len(), seed, step / self.batches);
            let b = (step % self.batches) as usize * self.r.args.batch;
            let rows = &order[b..b + self.r.args.batch];
            let batch = self.train_x.batch(rows, device);
            loss_fn.forward(model.forward(&batch), labels(&self.train_y, rows, device))
        };
        let (eigenvalues, history) =
            eigen_provider::<B, _>(cfg.as_ref(), || self.probe(seed), seed).unzip();
        let label = width_label(variant, target);
        let export = cfg.as_ref().map(|_| {
            self.exports
                .join(format!("minilm-{label}-{variant:?}-seed{seed}.safetensors"))
        });
        let run = Run {
            steps: self.r.steps,
            lr: self.r.args.lr,
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
        let acc = accuracy(|b| valid.forward(b), &self.test_x, &self.test_y, device);
        self.print_tuned(variant, &label, seed, acc, &trained);
        print_schedule(history.as_ref(), cfg.as_ref(), &trained);
        let size = match &export {
            Some(path) => Some(self.served_size(path, acc)?),
            None => None,
        };
        let cell = Cell {
            accuracy: acc,
            size,
            seconds: trained.seconds,
        };
        Ok((trained.model, cell))
    }

    /// The config of `variant` at `target` (`None` for full precision), its eigenvalues
    /// computed at most about [`Resolved::eigen_runs`] times a run.
    fn quantize_config(&self, variant: Variant, target: u32) -> Result<Option<QuantizeConfig>> {
        let mut cfg = variant_config(variant, target, self.r.setup())?;
        if let Some(cfg) = cfg.as_mut() {
            // Power iteration per encoder layer: at most EIGEN_ITERS Hessian-vector products
            // (finite differences, about 1 s each here), not DeepSpeed's 100.
            cfg.eigenvalue.max_iter = EIGEN_ITERS;
            // At most about EIGEN_RUNS computations a run: with a deadline, the drops of six
            // layers fall on different steps, and each would ask for one (nearly every
            // step of a short run, a minute each here).
            cfg.eigenvalue.gas_boundary_resolution = (self.r.steps / self.r.eigen_runs()).max(1);
        }
        Ok(cfg)
    }

    /// The loss whose Hessian the eigenvalue variants measure: the first 8 mails of the
    /// seed's first epoch.
    fn probe(&self, seed: u64) -> Probe {
        let rows = &epoch_order(self.train_y.len(), seed, 0)[..8];
        let y = rows.iter().map(|&i| self.train_y[i]).collect();
        Probe::new(self.config.clone(), CLASSES, self.train_x.select(rows), y)
    }

    /// The line of a finished fine-tune: its test accuracy `acc`, bits per layer and time.
    fn print_tuned(
        &self,
        variant: Variant,
        label: &str,
        seed: u64,
        acc: f64,
        trained: &Trained<TextClassifier<B>>,
    ) {
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
            trained.seconds / self.r.steps as f64
        );
    }

    /// The size of the export at `path`, read back from disk (what a user deploys is the
    /// file) after it scored `expected` served.
    fn served_size(&self, path: &Path, expected: f64) -> Result<Size> {
        let file = MoqFile::load(path)?;
        self.check_served(&file, path, expected)?;
        Size::of(&file, path)
    }

    /// The export `file` (read from `path`) served by its `MoqLinear` layers must score
    /// `expected`, the accuracy of the fake-quantized model it came from.
    fn check_served(&self, file: &MoqFile, path: &Path, expected: f64) -> Result<()> {
        let served = serve::<B::InnerBackend>(file, &self.config, CLASSES, self.device)?;
        let acc = accuracy(
            |b| served.forward(b),
            &self.test_x,
            &self.test_y,
            self.device,
        );
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

    /// PTQ at `target` bits: the full-precision fine-tune of `seed` rounded once, exported,
    /// and scored from its codes.
    fn ptq(&self, full: &TextClassifier<B>, target: u32, seed: u64) -> Result<Cell> {
        let started = Instant::now();
        let cfg = variant_config(Variant::Ptq, target, self.r.setup())?.expect("PTQ has a config");
        let optim = Moq::new(cfg)
            .include(ENCODER)
            .layers(LAYERS)
            .init(AdamConfig::new().init(), full)?;
        let file = optim.export_at_target(full)?;
        let path = self
            .exports
            .join(format!("minilm-{target}bit-Ptq-seed{seed}.safetensors"));
        file.save(&path)?;
        let served = serve::<B::InnerBackend>(&file, &self.config, CLASSES, self.device)?;
        let accuracy = accuracy(
            |b| served.forward(b),
            &self.test_x,
            &self.test_y,
            self.device,
        );
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

    /// Prints the time, the accuracy table and the export sizes, and publishes them.
    fn report(mut self) -> Result<()> {
        let minutes = self.spent / 60.0;
        println!(
            "this run: {:.0} min; the table's fine-tunes: {minutes:.0} min (cells in {})",
            self.started.elapsed().as_secs_f64() / 60.0,
            self.cells.dir().display()
        );
        let f32_bytes = f32_size::<B>(&self.config, self.device);
        let table = self.results.markdown();
        println!(
            "\nTest accuracy (%), mean ± std over {} seeds ({minutes:.0} min):\n\n{table}",
            self.r.seeds
        );
        let size_lines = self.size_lines(f32_bytes);
        println!("{}", size_lines.join("\n"));
        publish(self.r, &table, &size_lines, &self.notes, minutes)
    }

    /// The rows of the size table: the f32 model (`f32_bytes`), then each export once, by name.
    fn size_lines(&mut self, f32_bytes: u64) -> Vec<String> {
        let mut size_lines = vec![format!(
            "| f32 model (every parameter) | {f32_bytes} | 1.00 | {} | 1.00 |",
            4 * linear_weights(&self.config)
        )];
        self.sizes.sort_by(|a, b| a.0.cmp(&b.0));
        self.sizes.dedup_by(|a, b| a.0 == b.0);
        for (what, size) in &self.sizes {
            size_lines.push(format!(
                "| {what} | {} | {:.3} | {} | {:.3} |",
                size.file,
                size.file as f64 / f32_bytes as f64,
                size.codes,
                size.codes as f64 / (4 * linear_weights(&self.config)) as f64
            ));
        }
        size_lines
    }
}

/// Prints what the run trains on, and how.
fn print_data(r: &Resolved, train_y: &[i64], test_y: &[i64]) {
    let args = &r.args;
    let spam = |y: &[i64]| y.iter().filter(|&&l| l == 1).count();
    println!(
        "all-MiniLM-L6-v2 on SpamAssassin: {} train mails ({} spam), {} test ({} spam), {} tokens each at most; \
         Adam lr {}, batch {}, {} steps (≈{:.1} epochs); quantize_groups {}; every linear weight of the encoder \
         quantized, one schedule per encoder layer; embeddings, layer norms, biases and head in f32",
        train_y.len(),
        spam(train_y),
        test_y.len(),
        spam(test_y),
        args.max_len,
        args.lr,
        args.batch,
        r.steps,
        (r.steps as usize * args.batch) as f64 / train_y.len() as f64,
        args.groups,
    );
}

/// A fine-tune's eigenvalue computations (`history`) and, for a `cfg` that schedules its
/// bits down, each layer's drops.
fn print_schedule(
    history: Option<&EigenHistory>,
    cfg: Option<&QuantizeConfig>,
    trained: &Trained<impl Sized>,
) {
    if let Some(history) = history {
        println!("      {}", eigen_summary(history));
    }
    if let Some(cfg) = cfg.filter(|c| c.start_bits > c.target_bits) {
        for line in schedule_lines(trained, cfg.start_bits) {
            println!("      {line}");
        }
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

/// The name of the cell of `variant` at `target` for `seed` (full precision has no target).
fn cell_name(variant: Variant, target: u32, seed: u64) -> String {
    match variant {
        Variant::FullPrecision => format!("{variant:?}-seed{seed}"),
        _ => format!("{variant:?}-{target}bit-seed{seed}"),
    }
}

/// How a fine-tune's width is printed: `fp32` for full precision, `4-bit` at 4 bits.
fn width_label(variant: Variant, target: u32) -> String {
    if variant == Variant::FullPrecision {
        "fp32".to_string()
    } else {
        format!("{target}-bit")
    }
}

/// The column of `target` in the table.
fn column_of(targets: &[u32], target: u32) -> usize {
    targets.iter().position(|&t| t == target).unwrap_or(0)
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

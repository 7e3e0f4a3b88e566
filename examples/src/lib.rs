//! Shared pieces of the MoQ examples: the five ways a model is trained (full precision, basic
//! QAT, MoQ, MoQ with mixing, MoQ with Hessian eigenvalues), the training loop, seeded
//! shuffling and the results table.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use moq_burn::moq_hessian::{HessianEigenvalues, HessianLoss};
use moq_burn::{EigenHistory, EigenvalueProvider, HessianProvider, Moq, MoqBackend};
use moq_core::plot::{Curve, Staircase, curves_svg, schedule_svg};
use moq_core::{QuantizeConfig, Schedule, plan};

pub mod permutation;

/// How a model is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// No quantization: the baseline.
    FullPrecision,
    /// Basic quantization-aware training: the target bits from step 0.
    Qat,
    /// MoQ: start high, lose a bit per period (doubling) down to the target.
    Moq,
    /// MoQ with `fp16_mixed_quantize`: each drop blends in gradually.
    MoqMixing,
    /// MoQ with `eigenvalue.enabled`: sensitive layers (large top Hessian eigenvalue) lose
    /// their bits more slowly.
    MoqEigen,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 5] = [
        Variant::FullPrecision,
        Variant::Qat,
        Variant::Moq,
        Variant::MoqMixing,
        Variant::MoqEigen,
    ];

    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Variant::FullPrecision => "full precision",
            Variant::Qat => "basic QAT (target bits from step 0)",
            Variant::Moq => "MoQ (scheduled)",
            Variant::MoqMixing => "MoQ + mixing",
            Variant::MoqEigen => "MoQ + eigenvalue",
        }
    }
}

/// An example's work, generic over the backend, so `--backend` can pick one at run time.
pub trait Experiment {
    /// Runs on backend `B` (an autodiff backend whose inner backend runs MoQ's operations).
    fn run<B>(&self, device: B::Device) -> Result<()>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend;
}

/// Runs `experiment` on the backend named `backend`: `ndarray`, or `wgpu` in builds with the
/// `wgpu` feature.
pub fn run_on(backend: &str, experiment: &impl Experiment) -> Result<()> {
    match backend {
        "ndarray" => experiment.run::<Autodiff<NdArray>>(Default::default()),
        #[cfg(feature = "wgpu")]
        "wgpu" => experiment.run::<Autodiff<burn::backend::Wgpu>>(Default::default()),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => bail!("this build has no wgpu backend: rebuild with `--features wgpu`"),
        other => bail!("unknown backend `{other}` (ndarray or wgpu)"),
    }
}

/// What every quantized variant shares.
#[derive(Clone, Copy, Debug)]
pub struct QuantSetup {
    /// Optimizer steps in the run.
    pub steps: u64,
    /// `quantize_groups`.
    pub groups: usize,
    /// MoQ's start bits.
    pub start_bits: u32,
    /// Fraction of the run by which MoQ must have reached its target.
    pub reach_by: f64,
}

/// The `quantize_training` config of `variant` at `target` bits; `None` for full precision.
/// MoQ's period is the planner's largest one that reaches the target by `reach_by` of the run.
///
/// With eigenvalues, the most sensitive layer always has the normalised eigenvalue 1 (factor
/// 5: each period is 10 times the last), so the schedule is planned for that worst case: the
/// highest start (at most `start_bits`) from which it still reaches the target in time.
pub fn variant_config(
    variant: Variant,
    target: u32,
    setup: QuantSetup,
) -> Result<Option<QuantizeConfig>> {
    let base = QuantizeConfig::builder()
        .schedule_offset(0)
        .groups(setup.groups);
    let horizon = (setup.steps as f64 * setup.reach_by) as u64;
    let suggested = |start: u32, eigen: bool| -> Result<Option<u64>> {
        let probe = base.clone().bits(start, target).period(1).build()?;
        let mut schedule = Schedule::new(&probe, 1)?;
        if eigen {
            schedule.set_eigenvalues(&[1.0])?;
        }
        Ok(plan(&schedule, horizon).layers[0].suggested_period)
    };
    let config = match variant {
        Variant::FullPrecision => return Ok(None),
        Variant::Qat => base.bits(target, target).period(1).build()?,
        Variant::Moq | Variant::MoqMixing => {
            let start = setup.start_bits.max(target);
            let Some(period) = suggested(start, false)? else {
                bail!("{start} → {target} bits cannot be scheduled within {horizon} steps");
            };
            let period = period.min(setup.steps);
            let builder = base.bits(start, target).period(period);
            if variant == Variant::MoqMixing {
                // The full-precision share fades out over half a period.
                builder.mixing((2.0 / period as f64).min(1.0)).build()?
            } else {
                builder.build()?
            }
        }
        Variant::MoqEigen => {
            let mut start = setup.start_bits.max(target);
            let period = loop {
                match suggested(start, true)? {
                    Some(period) => break period,
                    None if start > target + 1 => start -= 1,
                    None => bail!(
                        "{target} bits with eigenvalues cannot be scheduled within {horizon} steps"
                    ),
                }
            };
            let mut config = base
                .bits(start, target)
                .period(period.min(setup.steps))
                .build()?;
            config.eigenvalue.enabled = true;
            config
        }
    };
    Ok(Some(config))
}

/// A trained model and what the schedule reached.
pub struct Trained<M> {
    /// The model as the last step left it (fake-quantized weights for quantized variants).
    pub model: M,
    /// Bits per layer at the end (empty for full precision).
    pub bits: Vec<Option<u32>>,
    /// Steps skipped for non-finite gradients.
    pub skipped: u64,
    /// Every bit drop: `(step, layer, bits after the drop)`.
    pub drops: Vec<(u64, usize, u32)>,
    /// Names of the schedule's layers (empty for full precision).
    pub layers: Vec<String>,
    /// `(step, mean training loss of the window ending there)`, when evaluated.
    pub loss_curve: Points,
    /// `(step, accuracy)` at 10 points of the run, when evaluated.
    pub accuracy_curve: Points,
    /// Wall time of the training loop, in seconds.
    pub seconds: f64,
}

/// How long and how to train, beyond the config.
pub struct Run<'a, M> {
    /// Optimizer steps.
    pub steps: u64,
    /// Adam's learning rate.
    pub lr: f64,
    /// The eigenvalue provider, when the config enables eigenvalues.
    pub eigenvalues: Option<BoxedProvider<M>>,
    /// When given, the run records its training-loss curve and this (test accuracy) at 10
    /// points of the run, for the figures.
    pub evaluate: Option<&'a dyn Fn(&M) -> f64>,
    /// When given (and the run is quantized), the trained model is exported here as packed
    /// low-bit codes (`MoqOptimizer::export`).
    pub export: Option<PathBuf>,
}

/// Trains `model` with Adam, wrapped by MoQ when `config` is given (`customize` adds layer
/// patterns and the like). `loss(model, step)` is the loss of the step's batch.
pub fn train<B, M>(
    model: M,
    config: Option<QuantizeConfig>,
    customize: impl FnOnce(Moq) -> Moq,
    run: Run<'_, M>,
    loss: impl Fn(&M, u64) -> Tensor<B, 1>,
) -> Result<Trained<M>>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    M: AutodiffModule<B> + 'static,
{
    let adam = AdamConfig::new().init();
    let start = Instant::now();
    let mut curves = Curves::new(run.steps, run.evaluate);
    let Some(config) = config else {
        let (model, _) = run_loop(model, adam, &run, &loss, |_, model, step, loss| {
            curves.record(model, step, loss)
        });
        return Ok(Trained {
            model,
            bits: Vec::new(),
            skipped: 0,
            drops: Vec::new(),
            layers: Vec::new(),
            loss_curve: curves.loss,
            accuracy_curve: curves.accuracy,
            seconds: start.elapsed().as_secs_f64(),
        });
    };
    let mut optim = customize(Moq::new(config)).init(adam, &model)?;
    let mut run = run;
    if let Some(provider) = run.eigenvalues.take() {
        optim = optim.with_eigenvalues(provider);
    }
    let mut drops = Vec::new();
    let mut last: Vec<Option<u32>> = vec![None; optim.layers().len()];
    let (model, optim) = run_loop(model, optim, &run, &loss, |optim, model, step, loss| {
        for (layer, (now, last)) in optim.layer_bits().into_iter().zip(&mut last).enumerate() {
            if let (Some(bits), Some(before)) = (now, *last)
                && bits < before
            {
                drops.push((step, layer, bits));
            }
            *last = now;
        }
        curves.record(model, step, loss);
    });
    if let Some(err) = optim.take_error() {
        bail!("MoQ reported an error during training: {err}");
    }
    if let Some(path) = &run.export {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        optim.export(&model)?.save(path)?;
    }
    Ok(Trained {
        model,
        bits: optim.layer_bits(),
        skipped: optim.skipped_steps(),
        drops,
        layers: optim.layers().iter().map(|l| l.name.clone()).collect(),
        loss_curve: curves.loss,
        accuracy_curve: curves.accuracy,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The curves of one run: the training loss averaged over windows of 2% of the run, and the
/// accuracy at 10 points.
struct Curves<'a, M> {
    evaluate: Option<&'a dyn Fn(&M) -> f64>,
    window: u64,
    every: u64,
    sum: f64,
    loss: Vec<(u64, f64)>,
    accuracy: Vec<(u64, f64)>,
}

impl<'a, M> Curves<'a, M> {
    fn new(steps: u64, evaluate: Option<&'a dyn Fn(&M) -> f64>) -> Self {
        Self {
            evaluate,
            window: steps.div_ceil(50).max(1),
            every: steps.div_ceil(10).max(1),
            sum: 0.0,
            loss: Vec::new(),
            accuracy: Vec::new(),
        }
    }

    fn record(&mut self, model: &M, step: u64, loss: Option<f64>) {
        let Some(evaluate) = self.evaluate else {
            return;
        };
        self.sum += loss.unwrap_or(f64::NAN);
        if (step + 1).is_multiple_of(self.window) {
            self.loss.push((step + 1, self.sum / self.window as f64));
            self.sum = 0.0;
        }
        if (step + 1).is_multiple_of(self.every) {
            self.accuracy.push((step + 1, evaluate(model)));
        }
    }
}

fn run_loop<B, M, O>(
    mut model: M,
    mut optim: O,
    run: &Run<'_, M>,
    loss: &impl Fn(&M, u64) -> Tensor<B, 1>,
    mut after_step: impl FnMut(&O, &M, u64, Option<f64>),
) -> (M, O)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let steps = run.steps;
    let read_loss = run.evaluate.is_some();
    // A progress line on a terminal (not in logs): the step, every 5% of the run.
    let show = std::io::stderr().is_terminal();
    for step in 0..steps {
        let value = loss(&model, step);
        let seen = read_loss.then(|| value.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(value.backward(), &model);
        model = optim.step(run.lr, model, grads);
        after_step(&optim, &model, step, seen);
        if show && (step + 1) % steps.div_ceil(20) == 0 {
            eprint!("\r  step {}/{steps}\x1b[K", step + 1);
        }
    }
    if show {
        eprint!("\r\x1b[K");
    }
    (model, optim)
}

/// Each layer's schedule as it ran: `name: 12@0 11@40 10@120 …` (bits from step).
pub fn schedule_lines(trained: &Trained<impl Sized>, start_bits: u32) -> Vec<String> {
    trained
        .layers
        .iter()
        .enumerate()
        .map(|(layer, name)| {
            let mut line = format!("{name}: {start_bits}@0");
            for (step, _, bits) in trained.drops.iter().filter(|d| d.1 == layer) {
                let _ = write!(line, " {bits}@{step}");
            }
            line
        })
        .collect()
}

/// An eigenvalue provider for a model `M`, as [`train`] takes it.
pub type BoxedProvider<M> = Box<dyn EigenvalueProvider<M>>;

/// The eigenvalue provider of a run whose config enables eigenvalues (`None` otherwise), with
/// the history to read its cost from. `probe` builds the loss on the probe batch.
pub fn eigen_provider<B, L>(
    config: Option<&QuantizeConfig>,
    probe: impl FnOnce() -> L,
    seed: u64,
) -> Option<(BoxedProvider<L::Model<B>>, EigenHistory)>
where
    B: AutodiffBackend,
    L: HessianLoss + Send + 'static,
    L::Model<B>: AutodiffModule<B>,
{
    let config = config.filter(|c| c.eigenvalue.enabled)?;
    let provider = HessianProvider::<B, L>::new(
        HessianEigenvalues::new(probe(), &config.eigenvalue).seed(seed),
    );
    let history = provider.history();
    Some((Box::new(provider), history))
}

/// Writes `bytes` to `path` whole (a temporary file, then a rename), creating its folder.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

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

/// What the eigenvalue computations of a run cost: computations, Hessian-vector products,
/// seconds, and whether the products were exact.
pub fn eigen_summary(history: &EigenHistory) -> String {
    let records = history.records();
    let hvps: u32 = records.iter().map(|r| r.report.hvps()).sum();
    let seconds: f64 = records.iter().map(|r| r.seconds).sum();
    let exact = records
        .iter()
        .flat_map(|r| &r.report.blocks)
        .all(|b| b.exact);
    format!(
        "{} eigenvalue computations, {hvps} Hessian-vector products ({}), {seconds:.1} s",
        records.len(),
        if exact { "exact" } else { "finite differences" }
    )
}

/// Runs the steps `steps` of a training loop and returns the model and the wall time, with any
/// queued device work finished before the clock stops (for the timing binaries).
pub fn timed_block<B, M, O>(
    model: M,
    optim: &mut O,
    steps: std::ops::Range<u64>,
    lr: f64,
    loss: &impl Fn(&M, u64) -> Tensor<B, 1>,
) -> (M, std::time::Duration)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let start = Instant::now();
    let mut model = model;
    for step in steps {
        let grads = GradientsParams::from_grads(loss(&model, step).backward(), &model);
        model = optim.step(lr, model, grads);
    }
    let _ = loss(&model, 0).into_scalar();
    (model, start.elapsed())
}

/// A burn-train renderer that prints one line per epoch and split with every metric's latest
/// text (burn's own CLI renderer prints a debug line per batch).
#[derive(Default)]
pub struct EpochLines {
    names: HashMap<MetricId, String>,
    train: BTreeMap<String, String>,
    valid: BTreeMap<String, String>,
}

impl EpochLines {
    fn record(
        names: &HashMap<MetricId, String>,
        into: &mut BTreeMap<String, String>,
        state: MetricState,
    ) {
        let entry = match state {
            MetricState::Generic(entry) | MetricState::Numeric(entry, _) => entry,
        };
        let name = names
            .get(&entry.metric_id)
            .cloned()
            .unwrap_or_else(|| "metric".to_string());
        into.insert(name, entry.serialized_entry.formatted);
    }

    fn line(split: &str, item: &TrainingProgress, metrics: &BTreeMap<String, String>) {
        let Some(progress) = &item.progress else {
            return;
        };
        if progress.items_processed < progress.items_total {
            return;
        }
        let values: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!(
            "epoch {}/{} {split:<5} {}",
            item.global_progress.items_processed,
            item.global_progress.items_total,
            values.join(" | ")
        );
    }
}

impl MetricsRendererTraining for EpochLines {
    fn update_train(&mut self, state: MetricState) {
        Self::record(&self.names, &mut self.train, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        Self::record(&self.names, &mut self.valid, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        Self::line("train", &item, &self.train);
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        Self::line("valid", &item, &self.valid);
    }
}

impl MetricsRendererEvaluation for EpochLines {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for EpochLines {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}

/// A small seeded generator (xorshift64*) for shuffling: reproducible, independent of the
/// backend's random stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator (any seed, 0 included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// Mean and sample standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Test accuracies per variant and target bit width.
pub struct Results {
    /// Target bit widths, in column order.
    pub targets: Vec<u32>,
    /// `(variant, column, accuracies over seeds)`; full precision uses column 0 only.
    pub cells: Vec<(Variant, usize, Vec<f64>)>,
}

impl Results {
    /// Records the accuracy of one run.
    pub fn add(&mut self, variant: Variant, column: usize, accuracy: f64) {
        match self
            .cells
            .iter_mut()
            .find(|(v, c, _)| *v == variant && *c == column)
        {
            Some((_, _, values)) => values.push(accuracy),
            None => self.cells.push((variant, column, vec![accuracy])),
        }
    }

    /// A markdown table: one row per variant, one column per target; `mean ± std` in percent.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| variant |");
        for t in &self.targets {
            let _ = write!(out, " {t}-bit |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(self.targets.len()));
        out.push('\n');
        for variant in Variant::ALL {
            let _ = write!(out, "| {} |", variant.label());
            for column in 0..self.targets.len() {
                let column = if variant == Variant::FullPrecision {
                    0
                } else {
                    column
                };
                match self
                    .cells
                    .iter()
                    .find(|(v, c, _)| *v == variant && *c == column)
                {
                    Some((_, _, values)) => {
                        let (mean, std) = mean_std(values);
                        let _ = write!(out, " {:.2} ± {:.2} |", 100.0 * mean, 100.0 * std);
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Replaces the section `name` of the markdown file at `path` (between `<!-- name:begin -->`
/// and `<!-- name:end -->`), or appends it; the file is written whole or not at all.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Results\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moq_configs_reach_their_target_in_time() {
        let setup = QuantSetup {
            steps: 1800,
            groups: 16,
            start_bits: 12,
            reach_by: 0.6,
        };
        for target in [8, 4, 2] {
            for variant in [Variant::Moq, Variant::MoqMixing, Variant::MoqEigen] {
                let cfg = variant_config(variant, target, setup).unwrap().unwrap();
                let mut schedule = Schedule::new(&cfg, 1).unwrap();
                if cfg.eigenvalue.enabled {
                    // The worst case: the most sensitive layer.
                    schedule.set_eigenvalues(&[1.0]).unwrap();
                }
                let p = plan(&schedule, 1080);
                assert!(p.layers[0].target_step().is_some(), "{variant:?} {target}");
                assert_eq!(cfg.mixing.enabled, variant == Variant::MoqMixing);
                assert_eq!(cfg.eigenvalue.enabled, variant == Variant::MoqEigen);
            }
            let qat = variant_config(Variant::Qat, target, setup)
                .unwrap()
                .unwrap();
            assert_eq!((qat.start_bits, qat.target_bits), (target, target));
        }
        assert!(
            variant_config(Variant::FullPrecision, 8, setup)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn table_and_sections() {
        let mut r = Results {
            targets: vec![8, 4],
            cells: Vec::new(),
        };
        r.add(Variant::FullPrecision, 0, 0.9);
        r.add(Variant::FullPrecision, 0, 0.92);
        r.add(Variant::Moq, 1, 0.5);
        let md = r.markdown();
        assert!(
            md.contains("| full precision | 91.00 ± 1.41 | 91.00 ± 1.41 |"),
            "{md}"
        );
        assert!(
            md.contains("| MoQ (scheduled) | – | 50.00 ± 0.00 |"),
            "{md}"
        );
        let dir = std::env::temp_dir().join(format!("moq-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.md");
        write_section(&path, "a", "first").unwrap();
        write_section(&path, "b", "second").unwrap();
        write_section(&path, "a", "third").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("<!-- a:begin -->\nthird\n<!-- a:end -->"),
            "{text}"
        );
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shuffles_are_seeded_permutations() {
        let mut a: Vec<usize> = (0..100).collect();
        let mut b = a.clone();
        Rng::new(3).shuffle(&mut a);
        Rng::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, (0..100).collect::<Vec<_>>());
    }
}

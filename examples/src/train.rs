//! The training loop every example runs, its eigenvalue provider, and what a run reached.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use moq_burn::moq_hessian::{HessianEigenvalues, HessianLoss};
use moq_burn::{EigenHistory, EigenvalueProvider, HessianProvider, Moq, MoqBackend};
use moq_core::QuantizeConfig;

use crate::Points;

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

impl<M> Trained<M> {
    /// Each layer's bits at the end, `-` for a layer without: `["8", "4", "-"]`.
    pub fn bit_labels(&self) -> Vec<String> {
        self.bits
            .iter()
            .map(|b| b.map_or("-".into(), |b| b.to_string()))
            .collect()
    }
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
    // Every layer starts at the config's start bits, so a drop at step 0 is recorded too.
    let start_bits = config.start_bits;
    let mut optim = customize(Moq::new(config)).init(adam, &model)?;
    let mut run = run;
    if let Some(provider) = run.eigenvalues.take() {
        optim = optim.with_eigenvalues(provider);
    }
    let mut drops = Vec::new();
    let mut last: Vec<Option<u32>> = vec![Some(start_bits); optim.layers().len()];
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

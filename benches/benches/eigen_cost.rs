//! Cost of MoQ's Hessian eigenvalues on the transformer example: one full computation (every
//! layer's top eigenvalue) in units of one plain training step, cold (random start) and warm
//! (from the previous eigenvectors, after a few more training steps), measured in the same
//! process and printed as `eigen/step = R`.
//!
//! `cargo bench -p moq-benches --bench eigen_cost [-- --backend wgpu]` (wgpu needs `--features wgpu`)

use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use moq_burn::moq_core::{EigenvalueConfig, QuantizeConfig};
use moq_burn::moq_hessian::{
    Block, EigenReport, HessianEigenvalues, HessianLoss, HvpMethod, Weights,
};
use moq_burn::{Moq, MoqBackend};
use moq_examples::permutation::{BATCH, Classifier, LR, Probe, TRAIN, Task};
use moq_examples::{Experiment, Rng, run_on, timed_block};

/// Time one eigenvalue computation against training steps.
#[derive(Parser, Debug)]
struct Args {
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Backend: ndarray, flex, tch (CPU), wgpu or cuda (all but ndarray need their feature).
    #[arg(long, default_value = "ndarray")]
    backend: String,
    /// Hessian-vector products: auto (exact where burn can), exact, or fd.
    #[arg(long, default_value = "auto")]
    method: String,
    /// Rounds (the median ratio is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Training steps per timed block.
    #[arg(long, default_value_t = 10)]
    block: u64,
    /// Training steps before the first round, so the weights are not those at initialisation.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Training steps between the cold and the warm computation.
    #[arg(long, default_value_t = 20)]
    gap: u64,
}

fn iterations(report: &EigenReport) -> String {
    report
        .blocks
        .iter()
        .map(|b| b.iterations.to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The Hessian-vector products `--method` names: auto (exact where burn can), exact, or fd.
fn hvp_method(name: &str) -> Result<HvpMethod> {
    Ok(match name {
        "auto" => HvpMethod::default(),
        "exact" => HvpMethod::Exact,
        "fd" => HvpMethod::FiniteDifference {
            relative_step: 1e-3,
        },
        other => bail!("unknown --method `{other}` (auto, exact or fd)"),
    })
}

/// The layers MoQ would schedule in the transformer example, as eigenvalue blocks.
fn layer_blocks<B>(model: &Classifier<B>) -> Result<Vec<Block>>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let layers = Moq::new(QuantizeConfig::default())
        .layers("encoder.layers.{i}")
        .init(AdamConfig::new().init(), model)?
        .layers()
        .to_vec();
    Ok(layers
        .iter()
        .map(|l| Block::new(l.name.clone(), l.params.iter().cloned()))
        .collect())
}

/// One computation of every block's top eigenvalue at `model`'s weights, and its seconds.
fn timed_compute<B, L>(
    estimator: &mut HessianEigenvalues<B::InnerBackend, L>,
    model: &Classifier<B>,
    blocks: &[Block],
) -> Result<(EigenReport, f64)>
where
    B: AutodiffBackend,
    L: HessianLoss,
{
    let start = std::time::Instant::now();
    let report = estimator.compute(&Weights::from_module(&model.valid()), blocks)?;
    Ok((report, start.elapsed().as_secs_f64()))
}

/// Round `round`'s line: a training step's time, and the cold and the warm computation's
/// with their iterations per layer.
fn print_round(round: usize, per_step: f64, cold: &(EigenReport, f64), warm: &(EigenReport, f64)) {
    let ((cold, cold_s), (warm, warm_s)) = (cold, warm);
    println!(
        "  round {round}: step {:.2} ms; cold {:.0} ms ({} iterations per layer, {}); warm {:.0} ms ({})",
        per_step * 1e3,
        cold_s * 1e3,
        iterations(cold),
        if cold.blocks.iter().all(|b| b.exact) {
            "exact"
        } else {
            "finite differences"
        },
        warm_s * 1e3,
        iterations(warm)
    );
}

/// The run's first line: the layers, the power iteration's settings, the rounds, the backend.
fn print_header(args: &Args, blocks: &[Block], config: &EigenvalueConfig) {
    println!(
        "transformer example (batch {BATCH}), {} layers [{}]; power iteration max_iter {}, tol {}; \
         {} rounds; backend {}",
        blocks.len(),
        blocks
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        config.max_iter,
        config.tol,
        args.rounds,
        args.backend
    );
}

fn run<B>(args: &Args, device: B::Device) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let method = hvp_method(&args.method)?;
    let data = Task::generate(TRAIN, 12_345);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let batches = (TRAIN / BATCH) as u64;
    let loss = |model: &Classifier<B>, step: u64| {
        let mut order: Vec<usize> = (0..TRAIN).collect();
        Rng::new(step / batches).shuffle(&mut order);
        let b = (step % batches) as usize;
        let (x, y) = data.tensors::<B>(&order[b * BATCH..(b + 1) * BATCH], &device);
        loss_fn.forward(model.forward(x), y)
    };
    B::seed(&device, 0);
    let mut model = Classifier::<B>::new(&device);
    let mut adam = AdamConfig::new().init();
    let blocks = layer_blocks(&model)?;
    let config = EigenvalueConfig::default();
    print_header(args, &blocks, &config);
    let mut step = 0;
    (model, _) = timed_block(model, &mut adam, 0..args.warmup, LR, &loss);
    step += args.warmup;
    let mut estimator = HessianEigenvalues::<B::InnerBackend, _>::new(
        Probe::new(&data, &(0..BATCH).collect::<Vec<_>>()),
        &config,
    )
    .method(method);
    let (mut cold_ratios, mut warm_ratios) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let (m, t) = timed_block(model, &mut adam, step..step + args.block, LR, &loss);
        model = m;
        step += args.block;
        let per_step = t.as_secs_f64() / args.block as f64;
        estimator.reset();
        let cold = timed_compute(&mut estimator, &model, &blocks)?;
        (model, _) = timed_block(model, &mut adam, step..step + args.gap, LR, &loss);
        step += args.gap;
        let warm = timed_compute(&mut estimator, &model, &blocks)?;
        cold_ratios.push(cold.1 / per_step);
        warm_ratios.push(warm.1 / per_step);
        print_round(round, per_step, &cold, &warm);
    }
    cold_ratios.sort_by(f64::total_cmp);
    warm_ratios.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!("eigen/step = {:.1} (cold)", median(&cold_ratios));
    println!("eigen/step = {:.1} (warm)", median(&warm_ratios));
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 || args.block == 0 {
        bail!("--rounds and --block must be at least 1");
    }
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

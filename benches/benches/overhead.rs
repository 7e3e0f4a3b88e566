//! Overhead of the MoQ wrapper: a training step with and without it, measured in the same
//! process in alternating blocks, printed as `moq_step/plain_step = R`. Two models:
//! - `transformer` (default): the transformer example's step (target R ≤ 1.10 on NdArray);
//! - `minilm`: all-MiniLM-L6-v2 with the spam head, batch 16 of 64-token mails, every linear
//!   weight of the encoder quantized (target R ≤ 1.05; `scripts/fetch-minilm` first).
//!
//! `cargo bench -p moq-benches --bench overhead [-- --model minilm] [-- --backend wgpu]` (wgpu
//! needs `--features wgpu`)

use std::time::Duration;

use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use moq_burn::{Moq, MoqBackend, MoqOptimizer};
use moq_core::QuantizeConfig;
use moq_examples::minilm::spam::{self, Corpus};
use moq_examples::minilm::{ModelDir, TextClassifier, labels};
use moq_examples::permutation::{BATCH, Classifier, LR, TRAIN, Task};
use moq_examples::{Experiment, Rng, run_on, timed_block};

/// Time the transformer example's step with and without MoQ.
#[derive(Parser, Debug)]
struct Args {
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Backend: ndarray, flex, tch (CPU), wgpu or cuda (all but ndarray need their feature).
    #[arg(long, default_value = "ndarray")]
    backend: String,
    /// The model: transformer or minilm.
    #[arg(long, default_value = "transformer")]
    model: String,
    /// Steps per timed block (default 20; 4 for minilm).
    #[arg(long)]
    block: Option<u64>,
    /// Blocks per contender, the median ratio of paired blocks is reported (default 15; 7 for
    /// minilm).
    #[arg(long)]
    rounds: Option<usize>,
}

fn run<B>(args: &Args, device: B::Device) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    match args.model.as_str() {
        "transformer" => transformer::<B>(args, device),
        "minilm" => minilm::<B>(args, device),
        other => bail!("unknown model `{other}` (transformer or minilm)"),
    }
}

fn transformer<B>(args: &Args, device: B::Device) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
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
    let plain_model = Classifier::<B>::new(&device);
    B::seed(&device, 0);
    let moq_model = Classifier::<B>::new(&device);
    let plain = AdamConfig::new().init();
    // Quantizing from step 0 at 8 bits, one schedule per encoder layer: every step pays the
    // full cost (masters, fake quantization of every weight, the finiteness check).
    let config = QuantizeConfig::builder()
        .bits(12, 8)
        .period(10)
        .schedule_offset(0)
        .groups(8)
        .build()?;
    let moq = Moq::new(config)
        .layers("encoder.layers.{i}")
        .init(AdamConfig::new().init(), &moq_model)?;
    let (block, rounds) = (args.block.unwrap_or(20), args.rounds.unwrap_or(15));
    println!(
        "transformer example step (batch {BATCH}), {rounds} blocks of {block} steps each, alternating; backend {}",
        args.backend
    );
    paired(plain_model, plain, moq_model, moq, block, rounds, LR, &loss);
    Ok(())
}

fn minilm<B>(args: &Args, device: B::Device) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    const MAILS: usize = 16;
    let dir = ModelDir::new(None);
    let config = dir.config()?;
    let tokenizer = dir.tokenizer(64)?;
    let corpus = Corpus::load(None, 1000)?;
    let texts: Vec<&str> = corpus.train.iter().map(|m| m.text.as_str()).collect();
    let (x, y) = (
        tokenizer.encode(&texts)?,
        corpus.train.iter().map(|m| m.label).collect::<Vec<_>>(),
    );
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let batches = (y.len() / MAILS) as u64;
    let loss = |model: &TextClassifier<B>, step: u64| {
        let mut order: Vec<usize> = (0..y.len()).collect();
        Rng::new(step / batches).shuffle(&mut order);
        let b = (step % batches) as usize * MAILS;
        let rows = &order[b..b + MAILS];
        loss_fn.forward(
            model.forward(&x.batch(rows, &device)),
            labels(&y, rows, &device),
        )
    };
    let model = |seed| -> Result<_> {
        B::seed(&device, seed);
        Ok(TextClassifier::new(
            dir.encoder::<B>(&device)?,
            &config,
            spam::CLASSES,
            &device,
        ))
    };
    let (plain_model, moq_model) = (model(0)?, model(0)?);
    // 12 → 8 bits from step 0, every encoder linear weight (groups of 128 and 512), one
    // schedule per encoder layer: every step pays the full cost.
    let cfg = QuantizeConfig::builder()
        .bits(12, 8)
        .period(10)
        .schedule_offset(0)
        .groups(1152)
        .build()?;
    let moq = Moq::new(cfg)
        .include("bert.encoder")
        .layers("bert.encoder.layer.{i}")
        .init(AdamConfig::new().init(), &moq_model)?;
    let (block, rounds) = (args.block.unwrap_or(4), args.rounds.unwrap_or(7));
    println!(
        "all-MiniLM-L6-v2 spam step (batch {MAILS}, at most 64 tokens), {rounds} blocks of {block} steps each, \
         alternating; backend {}",
        args.backend
    );
    paired(
        plain_model,
        AdamConfig::new().init(),
        moq_model,
        moq,
        block,
        rounds,
        5e-5,
        &loss,
    );
    Ok(())
}

/// Times `block`-step blocks of the plain and the MoQ optimizer in turn, `rounds` of each
/// after a warm-up block, and prints the median per-step times and the median paired ratio.
#[allow(clippy::too_many_arguments)]
fn paired<B, M, P, O>(
    mut plain_model: M,
    mut plain: P,
    mut moq_model: M,
    mut moq: MoqOptimizer<O, M, B>,
    block: u64,
    rounds: usize,
    lr: f64,
    loss: &impl Fn(&M, u64) -> Tensor<B, 1>,
) where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    M: AutodiffModule<B> + 'static,
    P: Optimizer<M, B>,
    O: Optimizer<M, B>,
{
    // Warm-up block for each.
    (plain_model, _) = timed_block(plain_model, &mut plain, 0..block, lr, loss);
    (moq_model, _) = timed_block(moq_model, &mut moq, 0..block, lr, loss);
    let (mut plain_times, mut moq_times) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let steps = (round as u64 + 1) * block..(round as u64 + 2) * block;
        let (m, t) = timed_block(plain_model, &mut plain, steps.clone(), lr, loss);
        plain_model = m;
        plain_times.push(t);
        let (m, t) = timed_block(moq_model, &mut moq, steps, lr, loss);
        moq_model = m;
        moq_times.push(t);
    }
    // Adjacent blocks are paired, so slow drifts of a shared machine cancel; the median of the
    // per-round ratios is the figure.
    let mut ratios: Vec<f64> = moq_times
        .iter()
        .zip(&plain_times)
        .map(|(m, p)| m.as_secs_f64() / p.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    plain_times.sort();
    moq_times.sort();
    let per_step = |t: Duration| t.as_secs_f64() * 1e3 / block as f64;
    let (p, m) = (
        per_step(plain_times[rounds / 2]),
        per_step(moq_times[rounds / 2]),
    );
    println!(
        "plain step {p:.2} ms  moq step {m:.2} ms (medians)  per-round ratios {:.3}..{:.3}",
        ratios[0],
        ratios[rounds - 1]
    );
    println!("moq_step/plain_step = {:.3}", ratios[rounds / 2]);
    println!(
        "(quantized parameters: {}; bits now {:?})",
        moq.quantized_params().len(),
        moq.layer_bits()
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == Some(0) || args.block == Some(0) {
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

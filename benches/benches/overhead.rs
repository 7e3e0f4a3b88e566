//! Overhead of the MoQ wrapper: the transformer example's training step with and without it,
//! measured in the same process in alternating blocks, printed as `moq_step/plain_step = R`
//! (target: R ≤ 1.10 on NdArray with the generic quantization path).
//!
//! `cargo bench -p moq-benches --bench overhead [-- --backend wgpu]` (wgpu needs `--features wgpu`)

use std::time::Duration;

use anyhow::{Result, bail};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::tensor::backend::AutodiffBackend;
use clap::Parser;
use moq_burn::{Moq, MoqBackend};
use moq_core::QuantizeConfig;
use moq_examples::permutation::{BATCH, Classifier, LR, TRAIN, Task};
use moq_examples::{Experiment, Rng, run_on, timed_block};

/// Time the transformer example's step with and without MoQ.
#[derive(Parser, Debug)]
struct Args {
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Backend: ndarray (CPU) or wgpu (needs the `wgpu` feature).
    #[arg(long, default_value = "ndarray")]
    backend: String,
    /// Steps per timed block.
    #[arg(long, default_value_t = 20)]
    block: u64,
    /// Blocks per contender (the median ratio of paired blocks is reported).
    #[arg(long, default_value_t = 15)]
    rounds: usize,
}

fn run<B>(args: &Args, device: B::Device) -> Result<()>
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
    let mut plain_model = Classifier::<B>::new(&device);
    B::seed(&device, 0);
    let mut moq_model = Classifier::<B>::new(&device);
    let mut plain = AdamConfig::new().init();
    // Quantizing from step 0 at 8 bits, one schedule per encoder layer: every step pays the
    // full cost (masters, fake quantization of every weight, the finiteness check).
    let config = QuantizeConfig::builder()
        .bits(12, 8)
        .period(10)
        .schedule_offset(0)
        .groups(8)
        .build()?;
    let mut moq = Moq::new(config)
        .layers("encoder.layers.{i}")
        .init(AdamConfig::new().init(), &moq_model)?;
    println!(
        "transformer example step (batch {BATCH}), {} blocks of {} steps each, alternating; backend {}",
        args.rounds, args.block, args.backend
    );
    // Warm-up block for each.
    (plain_model, _) = timed_block(plain_model, &mut plain, 0..args.block, LR, &loss);
    (moq_model, _) = timed_block(moq_model, &mut moq, 0..args.block, LR, &loss);
    let (mut plain_times, mut moq_times) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let steps = (round as u64 + 1) * args.block..(round as u64 + 2) * args.block;
        let (m, t) = timed_block(plain_model, &mut plain, steps.clone(), LR, &loss);
        plain_model = m;
        plain_times.push(t);
        let (m, t) = timed_block(moq_model, &mut moq, steps, LR, &loss);
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
    let per_step = |t: Duration| t.as_secs_f64() * 1e3 / args.block as f64;
    let (p, m) = (
        per_step(plain_times[args.rounds / 2]),
        per_step(moq_times[args.rounds / 2]),
    );
    println!(
        "plain step {p:.2} ms  moq step {m:.2} ms (medians)  per-round ratios {:.3}..{:.3}",
        ratios[0],
        ratios[args.rounds - 1]
    );
    println!("moq_step/plain_step = {:.3}", ratios[args.rounds / 2]);
    println!(
        "(quantized parameters: {}; bits now {:?})",
        moq.quantized_params().len(),
        moq.layer_bits()
    );
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

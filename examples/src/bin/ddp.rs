//! MoQ trained by several processes with burn-collective (docs/distributed.md): each process
//! (a node) holds a replica of the digits MLP and its own `MoqOptimizer`, computes the
//! gradient of its share of every global batch, and burn all-reduces the gradients.
//!
//! ```text
//! cargo build --release -p moq-examples --features ddp --bin ddp
//! target/release/ddp orchestrator --port 3000 &
//! target/release/ddp node --nodes 2 --rank 0 --port 3001 --out target/ddp &
//! target/release/ddp node --nodes 2 --rank 1 --port 3002 --out target/ddp
//! ```
//!
//! Each node writes `rank<R>.json` to `--out`: its layers' bits, schedule, masters and
//! quantized weights (as f32 bit patterns), and how many eigenvalue computations it made. With
//! `--nodes 1` it trains alone over the same global batches, without burn-collective.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use burn::collective::{CollectiveConfig, PeerId, ReduceOperation, finish_collective, register};
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use clap::{Parser, Subcommand};
use moq_burn::collective::{RootEigenvalues, replicate};
use moq_burn::moq_core::{QuantizeConfig, Rounding};
use moq_burn::moq_hessian::HessianEigenvalues;
use moq_burn::moq_hessian::path::{NamedVisitor, visit_named};
use moq_burn::{EigenHistory, HessianProvider, Moq, MoqBackend, MoqOptimizer};
use moq_examples::digits::{BATCH, Digits, Mlp, Probe, TRAIN};
use moq_examples::{Experiment, QuantSetup, Rng, Variant, run_on, variant_config};
use serde_json::json;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// burn-collective's global orchestrator: the nodes register with it and learn each
    /// other's addresses; the tensors go between the nodes. Runs until stopped.
    Orchestrator {
        /// The port it listens on (WebSocket).
        #[arg(long, default_value_t = 3000)]
        port: u16,
    },
    /// One node of the run (one process, one device).
    Node(NodeArgs),
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// Nodes in the run; 1 trains alone, without burn-collective.
    #[arg(long)]
    nodes: u32,
    /// This node's rank, 0..nodes; rank 0 is the root (eigenvalues, checkpoints).
    #[arg(long, default_value_t = 0)]
    rank: u32,
    /// The orchestrator's address.
    #[arg(long, default_value = "ws://localhost:3000")]
    orchestrator: String,
    /// This node's host name, as the other nodes reach it.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// This node's port for the tensors the other nodes download.
    #[arg(long, default_value_t = 3001)]
    port: u16,
    /// Optimizer steps, each over one global batch of 32 digits shared out between the nodes.
    #[arg(long, default_value_t = 40)]
    steps: u64,
    /// Target bits.
    #[arg(long, default_value_t = 4)]
    target: u32,
    /// Stretch each layer's schedule by its Hessian eigenvalue (computed on rank 0).
    #[arg(long)]
    eigen: bool,
    /// Stochastic rounding instead of round-to-nearest.
    #[arg(long)]
    stochastic: bool,
    /// Seed of the initialisation (rank 0's is used), the data order and the rounding noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rank 0 saves a checkpoint (model, optimizer, step) to `<out>/checkpoint` after this step.
    #[arg(long)]
    save_at: Option<u64>,
    /// Resume from a checkpoint directory written by `--save-at` (every rank reads the same).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop after this step, as if the job's time ran out: the schedule still plans for
    /// `--steps`, and a later `--resume` goes on from a checkpoint.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Where `rank<R>.json` (and the checkpoint) go.
    #[arg(long, default_value = "target/ddp")]
    out: PathBuf,
    /// Backend: ndarray, flex, tch (CPU), wgpu or cuda (all but ndarray need their feature).
    #[arg(long, default_value = "ndarray")]
    backend: String,
    /// How many seconds a wait on a peer or the orchestrator may take (registering, each
    /// tensor download and sync, leaving) before the node fails with an error that names it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// The UCI digits file (default: the copy in the examples crate).
    #[arg(long)]
    data: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Orchestrator { port } => {
            println!("orchestrator listening on ws://0.0.0.0:{port}");
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(burn_collective::start_global_orchestrator(port));
            Ok(())
        }
        Command::Node(args) => {
            ensure!(args.nodes >= 1, "--nodes must be at least 1");
            ensure!(
                args.rank < args.nodes,
                "--rank {} outside 0..{} (--nodes)",
                args.rank,
                args.nodes
            );
            ensure!(
                BATCH.is_multiple_of(args.nodes as usize),
                "--nodes {} does not divide the global batch of {BATCH}",
                args.nodes
            );
            run_on(&args.backend.clone(), &args)
        }
    }
}

impl Experiment for NodeArgs {
    fn run<B>(&self, device: B::Device) -> Result<()>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend,
    {
        node::<B>(self, &device)
    }
}

/// The rows of global batch `step`: full batches of a seeded shuffle, epoch after epoch.
fn global_batch(seed: u64, step: u64) -> Vec<usize> {
    let per_epoch = (TRAIN / BATCH) as u64;
    let mut order: Vec<usize> = (0..TRAIN).collect();
    Rng::new(seed * 1_000_003 + step / per_epoch).shuffle(&mut order);
    let b = (step % per_epoch) as usize * BATCH;
    order[b..b + BATCH].to_vec()
}

/// A node's optimizer: MoQ around the inner optimizer `O`, for the digits MLP.
type Optim<O, B> = MoqOptimizer<O, Mlp<B>, B>;

/// One node of the run: its arguments, its device and its place in the collective.
struct Node<'a, B: AutodiffBackend> {
    args: &'a NodeArgs,
    device: &'a B::Device,
    /// The node's one device in burn-collective.
    peer: PeerId,
    /// Rank 0: it computes the eigenvalues and saves the checkpoints.
    root: bool,
    /// More than one node: the gradients go through burn-collective.
    distributed: bool,
    /// `rank R/N`, at the start of the node's lines and errors.
    who: String,
}

fn node<B>(args: &NodeArgs, device: &B::Device) -> Result<()>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let data = args.data.clone().unwrap_or_else(Digits::default_path);
    let (train_set, _) = Digits::load(&data)?.split();
    let node = Node::<B> {
        args,
        device,
        peer: PeerId::from(0),
        root: args.rank == 0,
        distributed: args.nodes > 1,
        who: format!("rank {}/{}", args.rank, args.nodes),
    };
    let model = node.setup()?;
    let config = node.config()?;
    let optim = Moq::new(config.clone())
        .seed(args.seed)
        .init(AdamConfig::new().init(), &model)?;
    let (optim, history) = node.eigenvalues(optim, &config, &train_set);
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let (model, optim, start) = node.resume(model, optim, &recorder)?;
    let (model, optim) = node.train(model, optim, start, &train_set, &recorder)?;
    node.finish(&model, &optim, history)
}

impl<B> Node<'_, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    /// Registers with the orchestrator (with more than one node) and builds the model, with
    /// rank 0's parameters and path-derived ids.
    fn setup(&self) -> Result<Mlp<B>> {
        let (args, device, who) = (self.args, self.device, &self.who);
        let (peer, root, distributed) = (self.peer, self.root, self.distributed);
        // ANCHOR: setup
        if distributed {
            let config = CollectiveConfig::default()
                .with_num_devices(1)
                .with_num_nodes(args.nodes)
                .with_global_address(parse_address(&args.orchestrator)?)
                .with_node_address(parse_address(&format!("ws://{}:{}", args.host, args.port))?)
                .with_data_service_port(args.port)
                .with_global_timeout(Duration::from_secs(args.timeout));
            register::<B::InnerBackend>(peer, device.clone(), config).map_err(|err| {
                anyhow::anyhow!(
                    "{who}: registering with the orchestrator at {} failed: {err}",
                    args.orchestrator
                )
            })?;
            println!("{who}: registered with {}", args.orchestrator);
        }

        // Every rank builds the model, then takes rank 0's parameters and path-derived ids.
        B::seed(device, args.seed);
        let mut model = Mlp::<B>::new(device);
        // burn initialises a parameter when it is first read: read them all now, in module order,
        // so the seeded draws do not depend on what reads them first.
        weights(&model);
        if distributed {
            model = replicate(model, peer, root)?;
        }
        // ANCHOR_END: setup
        Ok(model)
    }

    /// The MoQ config of the run: MoQ (with eigenvalues with `--eigen`) to the target bits.
    fn config(&self) -> Result<QuantizeConfig> {
        let args = self.args;
        let setup = QuantSetup {
            steps: args.steps,
            groups: 16,
            start_bits: 12,
            reach_by: 0.6,
        };
        let variant = if args.eigen {
            Variant::MoqEigen
        } else {
            Variant::Moq
        };
        let Some(mut config) = variant_config(variant, args.target, setup)? else {
            bail!("{variant:?} has a MoQ config");
        };
        if args.stochastic {
            config.rounding = Rounding::Stochastic;
        }
        config.eigenvalue.max_iter = 10;
        config.eigenvalue.gas_boundary_resolution = (args.steps / 4).max(1);
        Ok(config)
    }

    /// Attaches the eigenvalue provider when `config` enables eigenvalues (computed on rank 0
    /// and shared with every rank), with the history that counts its computations.
    fn eigenvalues<O>(
        &self,
        mut optim: Optim<O, B>,
        config: &QuantizeConfig,
        train_set: &Digits,
    ) -> (Optim<O, B>, Option<EigenHistory>) {
        let (args, device) = (self.args, self.device);
        let (peer, root, distributed) = (self.peer, self.root, self.distributed);
        // ANCHOR: eigen
        let mut history = None;
        if config.eigenvalue.enabled {
            // The probe is the first global batch: the same rows on every rank.
            let rows = global_batch(args.seed, 0);
            let (x, y) = train_set.tensors::<B>(&rows, device);
            let probe = Probe {
                x: x.into_data(),
                y: y.into_data(),
            };
            let provider = HessianProvider::<B, Probe>::new(
                HessianEigenvalues::new(probe, &config.eigenvalue).seed(args.seed),
            );
            history = Some(provider.history());
            optim = if distributed {
                optim.with_eigenvalues(RootEigenvalues::<B::InnerBackend, _>::new(
                    provider,
                    peer,
                    root,
                    device.clone(),
                ))
            } else {
                optim.with_eigenvalues(provider)
            };
        }

        // ANCHOR_END: eigen
        (optim, history)
    }

    /// With `--resume`, the model and the optimizer loaded from the checkpoint, and the step
    /// it was saved after; else them as they are, from step 0.
    fn resume<O>(
        &self,
        model: Mlp<B>,
        optim: Optim<O, B>,
        recorder: &NamedMpkFileRecorder<FullPrecisionSettings>,
    ) -> Result<(Mlp<B>, Optim<O, B>, u64)>
    where
        O: Optimizer<Mlp<B>, B>,
    {
        let (device, who) = (self.device, &self.who);
        let Some(dir) = &self.args.resume else {
            return Ok((model, optim, 0));
        };
        let step: u64 = serde_json::from_str(
            &std::fs::read_to_string(dir.join("step.json")).with_context(|| {
                format!("{who}: cannot read `{}`", dir.join("step.json").display())
            })?,
        )?;
        let model = model
            .load_file(dir.join("model"), recorder, device)
            .with_context(|| format!("{who}: cannot load the model from `{}`", dir.display()))?;
        let record = recorder.load(dir.join("optim"), device).with_context(|| {
            format!("{who}: cannot load the optimizer from `{}`", dir.display())
        })?;
        let optim = optim.load_record(record);
        if let Some(err) = optim.take_error() {
            bail!("{who}: the checkpoint in `{}`: {err}", dir.display());
        }
        println!("{who}: resumed at step {step} from {}", dir.display());
        Ok((model, optim, step))
    }

    /// Trains from step `start` to `--steps` (or `--stop-after`), each step on this node's
    /// share of the global batch, the gradients averaged over the nodes; rank 0 saves the
    /// checkpoint after `--save-at`.
    fn train<O>(
        &self,
        mut model: Mlp<B>,
        mut optim: Optim<O, B>,
        start: u64,
        train_set: &Digits,
        recorder: &NamedMpkFileRecorder<FullPrecisionSettings>,
    ) -> Result<(Mlp<B>, Optim<O, B>)>
    where
        O: Optimizer<Mlp<B>, B>,
    {
        let (args, device, peer, distributed, who) = (
            self.args,
            self.device,
            self.peer,
            self.distributed,
            &self.who,
        );
        let share = BATCH / args.nodes as usize;
        let loss_fn = CrossEntropyLossConfig::new().init(device);
        let started = Instant::now();
        // ANCHOR: step
        let end = args.stop_after.map_or(args.steps, |s| s.min(args.steps));
        for step in start..end {
            let rows = global_batch(args.seed, step);
            let mine = &rows[args.rank as usize * share..(args.rank as usize + 1) * share];
            let (x, y) = train_set.tensors::<B>(mine, device);
            let loss = loss_fn.forward(model.forward(x), y);
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            if distributed {
                // The mean of equal shares' mean losses is the global batch's mean loss.
                grads = grads
                    .all_reduce::<B::InnerBackend>(peer, ReduceOperation::Mean)
                    .map_err(|err| {
                        anyhow::anyhow!("{who}: gradient all-reduce at step {step}: {err}")
                    })?;
            }
            model = optim.step(2e-3, model, grads);
            if let Some(err) = optim.take_error() {
                bail!("{who}: step {step}: {err}");
            }
            // ANCHOR_END: step
            if (step + 1) % 10 == 0 || step + 1 == args.steps {
                let loss: f32 = loss.into_scalar().elem();
                println!(
                    "{who}: step {}/{}: local loss {loss:.4}, bits {:?} ({:.1} s)",
                    step + 1,
                    args.steps,
                    optim.layer_bits(),
                    started.elapsed().as_secs_f64()
                );
            }
            self.save_at(step + 1, &model, &optim, recorder)?;
        }
        Ok((model, optim))
    }

    /// Rank 0 saves the checkpoint after step `done` when `--save-at` asks for that step.
    fn save_at<O>(
        &self,
        done: u64,
        model: &Mlp<B>,
        optim: &O,
        recorder: &NamedMpkFileRecorder<FullPrecisionSettings>,
    ) -> Result<()>
    where
        O: Optimizer<Mlp<B>, B>,
    {
        if self.root && self.args.save_at == Some(done) {
            let dir = self.args.out.join("checkpoint");
            save_checkpoint(&dir, done, model, optim, recorder)?;
            println!("{}: saved a checkpoint after step {done}", self.who);
        }
        Ok(())
    }

    /// Writes `rank<R>.json` (bits, schedule, masters, weights and eigenvalue computations)
    /// and leaves the collective.
    fn finish<O>(
        &self,
        model: &Mlp<B>,
        optim: &Optim<O, B>,
        history: Option<EigenHistory>,
    ) -> Result<()>
    where
        O: Optimizer<Mlp<B>, B>,
    {
        let (args, who) = (self.args, &self.who);
        let dump = json!({
            "rank": args.rank,
            "nodes": args.nodes,
            "steps": args.steps,
            "bits": optim.layer_bits(),
            "schedule": optim.schedule(),
            "masters": masters(optim),
            "weights": weights(&model.valid()),
            "eigen_computations": history.map_or(0, |h| h.records().len()),
        });
        std::fs::create_dir_all(&args.out)?;
        let path = args.out.join(format!("rank{}.json", args.rank));
        moq_examples::write_file(&path, serde_json::to_string(&dump)?.as_bytes())?;
        println!("{who}: wrote {}", path.display());
        if self.distributed {
            finish_collective::<B::InnerBackend>(self.peer)
                .map_err(|err| anyhow::anyhow!("{who}: leaving the collective: {err}"))?;
        }
        Ok(())
    }
}

fn parse_address<T: std::str::FromStr<Err = String>>(address: &str) -> Result<T> {
    address
        .parse()
        .map_err(|err| anyhow::anyhow!("address `{address}`: {err}"))
}

/// The checkpoint, whole or not at all: written beside `dir`, then renamed over it.
fn save_checkpoint<B, O>(
    dir: &Path,
    step: u64,
    model: &Mlp<B>,
    optim: &O,
    recorder: &NamedMpkFileRecorder<FullPrecisionSettings>,
) -> Result<()>
where
    B: AutodiffBackend,
    O: Optimizer<Mlp<B>, B>,
{
    let partial = dir.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial)?;
    model.clone().save_file(partial.join("model"), recorder)?;
    recorder.record(optim.to_record(), partial.join("optim"))?;
    std::fs::write(partial.join("step.json"), step.to_string())?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&partial, dir)
        .with_context(|| format!("cannot move the checkpoint to `{}`", dir.display()))?;
    Ok(())
}

/// Float bit patterns: what "bit-identical" compares.
fn bits_of(values: Vec<f32>) -> Vec<u32> {
    values.into_iter().map(f32::to_bits).collect()
}

fn values<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 after convert")
}

/// The optimizer's full-precision masters, by parameter path.
fn masters<O, B>(optim: &Optim<O, B>) -> serde_json::Value
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    O: Optimizer<Mlp<B>, B>,
{
    let record = optim.to_record();
    let map: serde_json::Map<String, serde_json::Value> = optim
        .quantized_params()
        .into_iter()
        .zip(record.masters)
        .map(|(path, master)| {
            let bits = master.map(|m| bits_of(values(m)));
            (path.to_string(), json!(bits))
        })
        .collect();
    serde_json::Value::Object(map)
}

/// Every float parameter of the model, by path.
fn weights<B: burn::tensor::backend::Backend>(model: &Mlp<B>) -> serde_json::Value {
    struct Collect(serde_json::Map<String, serde_json::Value>);
    impl<B: burn::tensor::backend::Backend> NamedVisitor<B> for Collect {
        fn visit_named<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            self.0
                .insert(path.to_string(), json!(bits_of(values(param.val()))));
        }
    }
    let mut collect = Collect(serde_json::Map::new());
    visit_named(model, &mut collect);
    serde_json::Value::Object(collect.0)
}

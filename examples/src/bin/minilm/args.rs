//! The `minilm fine-tune` command line ([`Args`]), its defaults decided ([`Resolved`]), and
//! the settings every fine-tune shares.

use std::path::{Path, PathBuf};

use anyhow::Result;
use moq_examples::{Cells, QuantSetup, Variant, schedule_note, variant_config};

/// Which parameters MoQ quantizes: every linear weight of the encoder (rank 2 under
/// `bert.encoder`); the embeddings, the layer norms, the biases and the head stay f32.
pub const ENCODER: &str = "bert.encoder";
/// One schedule (and one eigenvalue) per encoder layer.
pub const LAYERS: &str = "bert.encoder.layer.{i}";
/// Power iterations per layer and eigenvalue computation.
pub const EIGEN_ITERS: u32 = 10;
/// Eigenvalue computations per run, about (their spacing, `gas_boundary_resolution`); a minute
/// each here.
const EIGEN_RUNS: u64 = 5;
/// The same for `--quick`, which must finish within 20 minutes on 2 cores (11 measured).
const EIGEN_RUNS_QUICK: u64 = 4;
/// Optimizer steps per fine-tune of the full run.
pub const STEPS: u64 = 120;
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
    pub model: Option<PathBuf>,
    /// The corpus directory (`scripts/fetch-minilm` fills the default).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Backend: ndarray, flex, tch (CPU), wgpu or cuda (all but ndarray need their feature).
    #[arg(long, default_value = "ndarray")]
    pub backend: String,
    /// One seed, 4 bits only, fewer steps and test mails: about 11 minutes on 2 cores.
    #[arg(long)]
    pub quick: bool,
    /// Seeds per cell (default 3; 1 with --quick).
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed: the run fine-tunes seeds `first-seed .. first-seed + seeds`. Two
    /// processes split a table's seeds this way (`--seeds 2` beside `--first-seed 2 --seeds 1`),
    /// and a last run over all of them publishes it from their cells.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
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
    pub second_order: bool,
    /// Mails per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Tokens kept of each mail (subject first).
    #[arg(long, default_value_t = 32)]
    pub max_len: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// MoQ's highest start width (lowered until the schedule reaches its target by 60% of the
    /// run).
    #[arg(long, default_value_t = 12)]
    pub start_bits: u32,
    /// `quantize_groups`: 1152 makes groups of 128 weights in the attention's 384 × 384
    /// matrices and of 512 in the feed-forward's 384 × 1536.
    #[arg(long, default_value_t = 1152)]
    pub groups: usize,
    /// Where the table goes (a section of this markdown file).
    #[arg(long, default_value = "target/results/results.md")]
    pub out: PathBuf,
    /// Write the published table instead: the MiniLM section of docs/results.md.
    #[arg(long, conflicts_with = "out")]
    pub docs: bool,
    /// Run every fine-tune again, ignoring the results of earlier runs of this configuration
    /// (kept in `target/results/minilm-cells/`, so an interrupted run resumes where it stopped).
    #[arg(long)]
    pub fresh: bool,
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
    /// The arguments as given.
    pub args: Args,
    /// Seeds per cell.
    pub seeds: u64,
    /// Optimizer steps per fine-tune.
    pub steps: u64,
    /// Target widths, one column each.
    pub targets: Vec<u32>,
    /// Held-out mails.
    pub test: usize,
}

impl Resolved {
    /// The variants fine-tuned at each target.
    pub fn trained(&self) -> impl Iterator<Item = Variant> + '_ {
        TRAINED.into_iter().filter(|&v| {
            self.args.second_order
                || !matches!(v, Variant::MoqSecondOrder | Variant::QatSecondOrder)
        })
    }
    /// What the quantized variants' configs are made from: MoQ reaches its target by 60% of
    /// the run.
    pub fn setup(&self) -> QuantSetup {
        QuantSetup {
            steps: self.steps,
            groups: self.args.groups,
            start_bits: self.args.start_bits,
            reach_by: 0.6,
        }
    }

    /// Eigenvalue computations per fine-tune, about.
    pub fn eigen_runs(&self) -> u64 {
        if self.args.quick {
            EIGEN_RUNS_QUICK
        } else {
            EIGEN_RUNS
        }
    }

    /// The schedule of every scheduled variant at every target; an error if one does not fit
    /// the run.
    pub fn schedule_notes(&self) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for &target in &self.targets {
            for variant in self.trained() {
                let cfg = variant_config(variant, target, self.setup())?;
                if let Some(cfg) = cfg.filter(|_| variant != Variant::Qat) {
                    notes.push(format!(
                        "{} at {target} bits: {}",
                        variant.label(),
                        schedule_note(&cfg)
                    ));
                }
            }
        }
        Ok(notes)
    }

    /// The finished fine-tunes of this configuration, under `target/results/minilm-cells/`.
    pub fn cells(&self) -> Result<Cells> {
        let args = &self.args;
        Cells::new(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/results/minilm-cells"),
            &format!(
                "minilm fine-tune v1: steps {} test {} batch {} max_len {} lr {} start_bits {} groups {} \
                 eigen_iters {EIGEN_ITERS} eigen_runs {} backend {}",
                self.steps,
                self.test,
                args.batch,
                args.max_len,
                args.lr,
                args.start_bits,
                args.groups,
                self.eigen_runs(),
                args.backend
            ),
            args.fresh,
        )
    }
}

//! The study: which method to turn on, at equal export bytes, over paired seeds.
//!
//! ```text
//! scripts/fetch-brown
//! cargo run --release -p moq-examples --features tch --bin study -- charlm --backend tch
//! ```
//!
//! Each task runs its grid (every method at every width, a second step budget, a
//! learning-rate sweep; see the guide's results page), keeps each finished run as a cell so an
//! interrupted study resumes and several processes can split the seeds (`--first-seed`,
//! `--seeds`), and writes its tables and frontier figure. Tasks: `charlm` (a GPT-style
//! character model on the Brown corpus, held-out bits per character), `genre` (all-MiniLM-L6-v2
//! telling a Brown sentence's genre, accuracy) and `distill` (all-MiniLM-L6-v2 reproducing its
//! full-precision sentence embeddings, cosine); the last two need `scripts/fetch-minilm model`.

mod charlm;
mod run;
mod text;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use moq_examples::run_on;

#[derive(Parser, Debug, Clone)]
#[command(about = "Every MoQ method at equal export bytes, over paired seeds")]
pub struct Args {
    /// The task.
    pub task: Task,
    /// Backend: ndarray, flex, tch (CPU), wgpu or cuda (all but ndarray need their feature).
    #[arg(long, default_value = "ndarray")]
    pub backend: String,
    /// A tiny model and grid that runs in a minute (the test suite's mode).
    #[arg(long)]
    pub quick: bool,
    /// Seeds (default 5; 2 with --quick).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// The first seed: this run does seeds `first-seed .. first-seed + seeds`. The table is
    /// written from every finished cell of seeds `0 .. first-seed + seeds`.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Only these parts of the grid: main, longer, sweep (default all).
    #[arg(long, value_delimiter = ',')]
    pub parts: Option<Vec<String>>,
    /// The all-MiniLM-L6-v2 directory of the sentence tasks (`scripts/fetch-minilm model`
    /// fills the default).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The corpus directory (`scripts/fetch-brown` fills the default).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Where the cells are kept (default `docs/study/cells`, committed; `target/results/
    /// study-cells` with --quick).
    #[arg(long)]
    pub cells: Option<PathBuf>,
    /// Where the pretrained model is kept (default `target/results/study-models`).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Where the tables go (a section of this markdown file, its figure in `figures/` beside
    /// it).
    #[arg(long, default_value = "target/results/results.md")]
    pub out: PathBuf,
    /// Write the published tables instead: the study's section of docs/results.md.
    #[arg(long, conflicts_with = "out")]
    pub docs: bool,
    /// Run every cell again, ignoring earlier results of this configuration.
    #[arg(long)]
    pub fresh: bool,
}

/// The study's tasks.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// A GPT-style character language model on the Brown corpus: bits per character.
    Charlm,
    /// all-MiniLM-L6-v2 fine-tuned to tell a Brown sentence's genre (15): accuracy.
    Genre,
    /// all-MiniLM-L6-v2 trained to reproduce its full-precision embeddings: cosine.
    Distill,
}

fn main() -> Result<()> {
    let args = Args::parse();
    match args.task {
        Task::Charlm => run_on(&args.backend.clone(), &charlm::Study::new(args)?),
        Task::Genre | Task::Distill => run_on(&args.backend.clone(), &text::TextStudy::new(args)?),
    }
}

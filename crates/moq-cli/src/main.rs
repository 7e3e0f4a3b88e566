//! The `moq` command: plan a MoQ schedule, fake-quantize a safetensors file, inspect an export,
//! choose each layer's width under a size budget.
//!
//! Bad input (a missing file, malformed JSON or safetensors, a tensor that cannot be split into
//! the groups, NaN in a tensor, a bad flag) exits with status 2 and one line naming what is at
//! fault; no output file is left behind, also when the command is interrupted by a signal
//! (exit status 128 + the signal). Input files must be regular files (a FIFO or a device is
//! refused before it is opened); a config is at most 1 MiB; a safetensors file is read header
//! first and one tensor at a time, so memory follows the largest tensor, not the file.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod allocate;
mod inspect;
mod output;
mod quantize;
mod schedule;

pub use output::write_whole;

/// Mixture-of-Quantization tools.
#[derive(Debug, Parser)]
#[command(name = "moq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the bit schedule of a config: CSV `step,layer,bits`, or a summary with --summary.
    Schedule(ScheduleArgs),
    /// Fake-quantize the float tensors of a safetensors file.
    Quantize(QuantizeArgs),
    /// Print what a MoQ export holds: per tensor its bits, groups, size and compression.
    Inspect(InspectArgs),
    /// Choose each tensor's width under a size budget, from its sensitivity and error.
    Allocate(AllocateArgs),
}

/// Arguments of `moq allocate`.
#[derive(Debug, Args)]
pub struct AllocateArgs {
    /// Safetensors file of the weights: each float tensor of rank ≥ 2 is a layer.
    #[arg(long)]
    pub input: PathBuf,
    /// Budget in average bits per quantized weight (e.g. 4.0).
    #[arg(
        long,
        required_unless_present = "budget_bytes",
        conflicts_with = "budget_bytes"
    )]
    pub budget: Option<f64>,
    /// Budget in bytes of the allocated tensors' exports (packed codes, f32 scales, zero points).
    #[arg(long)]
    pub budget_bytes: Option<u64>,
    /// Candidate widths [default: 2,3,4,5,6,8].
    #[arg(long, value_delimiter = ',')]
    pub bits: Option<Vec<u32>>,
    /// Quantization groups per tensor [default: 1].
    #[arg(long)]
    pub groups: Option<usize>,
    /// Grid type [default: symmetric].
    #[arg(long = "type", value_enum)]
    pub quant_type: Option<TypeArg>,
    /// JSON object of tensor names to sensitivities s ≥ 0 (e.g. top Hessian eigenvalues;
    /// default 1 for every tensor).
    #[arg(long)]
    pub sensitivity: Option<PathBuf>,
    /// Count each group's f32 scale (and zero point) towards --budget.
    #[arg(long, conflicts_with = "budget_bytes")]
    pub count_scales: bool,
}

/// Arguments of `moq inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A safetensors file written by a MoQ export (`MoqOptimizer::export`).
    pub file: PathBuf,
}

/// Arguments of `moq schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// DeepSpeed config (whole ds_config.json or the quantize_training section; a regular
    /// file of at most 1 MiB).
    #[arg(long)]
    pub config: PathBuf,
    /// Number of optimizer steps in the run (steps are numbered from 0).
    #[arg(long)]
    pub steps: u64,
    /// Number of layers (default: 1, or the number of --eigenvalues; at most 65536).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Normalized eigenvalue of each layer, in [0, 1], fixed for the whole run.
    #[arg(long, value_delimiter = ',')]
    pub eigenvalues: Option<Vec<f32>>,
    /// Every layer at its target by this optimizer step (the config's `moq.deadline`, set or
    /// replaced): the deadline schedule places every drop.
    #[arg(long)]
    pub deadline: Option<u64>,
    /// Print the planner's answer for humans instead of CSV.
    #[arg(long)]
    pub summary: bool,
    /// Also draw bits per layer over the run into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Grid type flag.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    /// Symmetric around zero.
    Symmetric,
    /// Min/max with a zero point.
    Asymmetric,
}

/// Rounding flag.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoundingArg {
    /// Nearest, ties to even.
    Nearest,
    /// Stochastic, seeded.
    Stochastic,
}

/// Arguments of `moq quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// Input safetensors file (read header first, one tensor at a time).
    #[arg(long)]
    pub input: PathBuf,
    /// Output safetensors file (written whole or not at all; never the input file).
    #[arg(long)]
    pub output: PathBuf,
    /// Bit width, 1 to 16.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub bits: u32,
    /// Quantization groups per tensor [default: 1].
    #[arg(long, conflicts_with = "config")]
    pub groups: Option<usize>,
    /// Grid type [default: symmetric].
    #[arg(long = "type", value_enum, conflicts_with = "config")]
    pub quant_type: Option<TypeArg>,
    /// Rounding [default: nearest].
    #[arg(long, value_enum, conflicts_with = "config")]
    pub rounding: Option<RoundingArg>,
    /// Seed of stochastic rounding.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Quantize every float tensor, not only those of rank ≥ 2.
    #[arg(long)]
    pub all: bool,
    /// Take type, groups and rounding from a DeepSpeed config.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            say(&format!("moq: {} (see moq --help)", usage_error(&e)));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = output::clean_up_on_signals() {
        say(&format!("moq: {e:#}"));
        return ExitCode::from(2);
    }
    let result = match &cli.command {
        Command::Schedule(args) => schedule::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Allocate(args) => allocate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("moq: {e:#}"));
            ExitCode::from(2)
        }
    }
}

/// clap's error as one line: its message and the lines that carry names (the missing flags
/// follow "the following required arguments were not provided:" on lines of their own),
/// without the usage and help hints.
fn usage_error(e: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a subcommand is required: schedule, quantize, inspect or allocate".into();
    }
    let text = e.to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let line = parts.join(" ");
    let line = line.trim_start_matches("error: ");
    if line.is_empty() {
        "invalid arguments".into()
    } else {
        line.to_owned()
    }
}

/// One line on stderr: newlines become spaces and other control characters (a `\r`, an escape
/// sequence taken from a file name) are escaped, so the line is one line that cannot rewrite
/// the terminal. A stderr that cannot be written (a full disk, a closed pipe) loses the line
/// but never turns into a panic: the exit code stays the documented one.
pub fn say(line: &str) {
    use std::io::Write as _;
    let line = moq_core::error::escape_controls(&line.replace('\n', " "));
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// What a file error says without its path (for a message that names the file itself).
pub fn file_reason(e: moq_core::MoqError) -> String {
    match e {
        moq_core::MoqError::File { reason, .. } => reason,
        e => e.to_string(),
    }
}

/// Opens the safetensors file `path` for reading ([`moq_core::input::TensorFile`]: header
/// checked, data read per tensor); errors say whether it is missing or not valid.
pub fn open_tensors(path: &Path) -> Result<moq_core::input::TensorFile> {
    std::fs::metadata(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    moq_core::input::TensorFile::open(path).map_err(|e| {
        anyhow::anyhow!(
            "`{}` is not a valid safetensors file: {}",
            path.display(),
            file_reason(e)
        )
    })
}

/// Reads and parses a DeepSpeed config file (a regular file of at most
/// [`moq_core::input::MAX_CONFIG_BYTES`]); errors name the file.
pub fn read_config(path: &Path) -> Result<moq_core::QuantizeConfig> {
    let cannot = || format!("cannot read config `{}`", path.display());
    let bytes = moq_core::input::read_limited(path, moq_core::input::MAX_CONFIG_BYTES)
        .map_err(|e| anyhow::anyhow!(file_reason(e)))
        .with_context(cannot)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("not UTF-8 text ({e})"))
        .with_context(cannot)?;
    moq_core::QuantizeConfig::from_json_str(&text)
        .with_context(|| format!("config `{}`", path.display()))
}

//! The `moq` command: plan a MoQ schedule, fake-quantize a safetensors file, inspect an export.
//!
//! Bad input (a missing file, malformed JSON or safetensors, a tensor that cannot be split into
//! the groups, NaN in a tensor, a bad flag) exits with status 2 and one line naming what is at
//! fault; no output file is left behind.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod inspect;
mod quantize;
mod schedule;

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
    /// DeepSpeed config (whole ds_config.json or the quantize_training section).
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
    /// Input safetensors file.
    #[arg(long)]
    pub input: PathBuf,
    /// Output safetensors file (written whole or not at all).
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
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            say(&format!("moq: {first} (see moq --help)"));
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Schedule(args) => schedule::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Inspect(args) => inspect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("moq: {}", format!("{e:#}").replace('\n', " ")));
            ExitCode::from(2)
        }
    }
}

/// One line on stderr. A stderr that cannot be written (a full disk, a closed pipe) loses the
/// line but never turns into a panic: the exit code stays the documented one.
pub fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Reads and parses a DeepSpeed config file; errors name the file.
pub fn read_config(path: &Path) -> Result<moq_core::QuantizeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config `{}`", path.display()))?;
    moq_core::QuantizeConfig::from_json_str(&text)
        .with_context(|| format!("config `{}`", path.display()))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`: the output
/// is whole or absent.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".moq-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in `{}`", dir.display()))?;
    // Output files are for others to read too (tempfile creates them private).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

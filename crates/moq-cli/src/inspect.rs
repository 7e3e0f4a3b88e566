//! `moq inspect FILE`: per tensor of a MoQ export, its bits, grid, groups, stored size and
//! compression against f32, then the totals, and what the model served from it holds on its
//! device (`moq_burn::load_codes` into `MoqLinear` layers) against f16 and f32 weights. The export is checked as `MoqFile::load` checks it
//! (sizes with checked arithmetic, codes against the metadata, scales finite and not negative)
//! but only its header, scales and zero points are read (`MoqFile::summarize`), and names are
//! printed with control characters escaped.

use std::fmt::Write as _;
use std::io::{self, Write};

use anyhow::{Context, Result};
use moq_core::error::escape_controls;
use moq_core::export::{MoqFile, Summary};

use crate::InspectArgs;

/// Runs the subcommand.
pub fn run(args: &InspectArgs) -> Result<()> {
    let tensors = MoqFile::summarize(&args.file).context("cannot inspect")?;
    let text = report(&tensors);
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

fn report(tensors: &[Summary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<14} {:>4} {:<10} {:>6} {:>12} {:>12} {:>7}",
        "tensor", "shape", "bits", "grid", "groups", "bytes", "f32 bytes", "ratio"
    );
    let (mut stored, mut full, mut quantized) = (0usize, 0usize, 0usize);
    let (mut served, mut wide) = (0usize, Vec::new());
    for t in tensors {
        let f32_bytes = t.len() * 4;
        stored += t.bytes;
        full += f32_bytes;
        served += t.served_bytes();
        if t.served_dequantized() {
            wide.push(escape_controls(&t.name));
        }
        let (bits, grid, groups) = match t.grid {
            Some((bits, quant_type, groups)) => {
                quantized += 1;
                (bits, quant_type.as_str(), groups.to_string())
            }
            None => (32, "f32", "-".to_string()),
        };
        let _ = writeln!(
            out,
            "{:<40} {:<14} {:>4} {:<10} {:>6} {:>12} {:>12} {:>6.2}x",
            escape_controls(&t.name),
            dims(&t.shape),
            bits,
            grid,
            groups,
            t.bytes,
            f32_bytes,
            f32_bytes as f64 / t.bytes.max(1) as f64
        );
    }
    let _ = writeln!(
        out,
        "\n{quantized} quantized and {} f32 tensors: {stored} bytes, {full} in f32 ({:.2}x smaller)",
        tensors.len() - quantized,
        full as f64 / stored.max(1) as f64
    );
    let _ = writeln!(
        out,
        "served in MoqLinear layers (moq_burn::load_codes): {served} bytes on the device, {:.3} of \
         f16 ({}) and {:.3} of f32 ({full})",
        served as f64 / (full / 2).max(1) as f64,
        full / 2,
        served as f64 / full.max(1) as f64
    );
    if !wide.is_empty() {
        let _ = writeln!(
            out,
            "served dequantized (wider than 8 bits, or not 2-d): {}",
            wide.join(", ")
        );
    }
    out
}

/// `16x16`.
fn dims(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

//! `moq inspect FILE`: per tensor of a MoQ export, its bits, grid, groups, stored size and
//! compression against f32, then the totals. The export is checked first (`MoqFile::load`:
//! sizes with checked arithmetic, codes against the metadata, scales finite and not negative),
//! and names are printed with control characters escaped.

use std::fmt::Write as _;
use std::io::{self, Write};

use anyhow::{Context, Result};
use moq_core::error::escape_controls;
use moq_core::export::MoqFile;

use crate::InspectArgs;

/// Runs the subcommand.
pub fn run(args: &InspectArgs) -> Result<()> {
    let file = MoqFile::load(&args.file).context("cannot inspect")?;
    let text = report(&file);
    match io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

fn report(file: &MoqFile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:<14} {:>4} {:<10} {:>6} {:>12} {:>12} {:>7}",
        "tensor", "shape", "bits", "grid", "groups", "bytes", "f32 bytes", "ratio"
    );
    let (mut stored, mut full) = (0usize, 0usize);
    for e in &file.quantized {
        let bytes = e.packed.size_bytes();
        let f32_bytes = e.packed.len * 4;
        stored += bytes;
        full += f32_bytes;
        let _ = writeln!(
            out,
            "{:<40} {:<14} {:>4} {:<10} {:>6} {:>12} {:>12} {:>6.2}x",
            escape_controls(&e.name),
            dims(&e.shape),
            e.packed.bits,
            e.packed.quant_type.as_str(),
            e.packed.groups,
            bytes,
            f32_bytes,
            f32_bytes as f64 / bytes.max(1) as f64
        );
    }
    for (name, shape, values) in &file.float {
        let bytes = values.len() * 4;
        stored += bytes;
        full += bytes;
        let _ = writeln!(
            out,
            "{:<40} {:<14} {:>4} {:<10} {:>6} {:>12} {:>12} {:>6.2}x",
            escape_controls(name),
            dims(shape),
            32,
            "f32",
            "-",
            bytes,
            bytes,
            1.0
        );
    }
    let _ = writeln!(
        out,
        "\n{} quantized and {} f32 tensors: {stored} bytes, {full} in f32 ({:.2}x smaller)",
        file.quantized.len(),
        file.float.len(),
        full as f64 / stored.max(1) as f64
    );
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

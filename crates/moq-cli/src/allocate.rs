//! `moq allocate`: each layer's width under a size budget, from its sensitivity and its
//! quantization error at each candidate width (`moq_core::allocate`, solved exactly).

use std::collections::BTreeMap;
use std::io::{self, Write};

use anyhow::{Context, Result, bail};
use half::{bf16, f16};
use moq_core::allocate::{
    Allocation, Budget, DEFAULT_CANDIDATES, LayerCurve, Overhead, allocate, measure,
};
use moq_core::error::escape_controls;
use moq_core::input::{MAX_CONFIG_BYTES, TensorEntry, TensorFile, json, read_limited};
use moq_core::{QuantSpec, QuantType, Schedule};
use safetensors::Dtype;
use serde_json::Value;

use crate::{AllocateArgs, TypeArg, file_reason};

/// Runs the subcommand.
pub fn run(args: &AllocateArgs) -> Result<()> {
    let budget = budget(args)?;
    let quant_type = match args.quant_type {
        Some(TypeArg::Asymmetric) => QuantType::Asymmetric,
        _ => QuantType::Symmetric,
    };
    let candidates = candidates(args, quant_type)?;
    let groups = args.groups.unwrap_or(1);
    if groups == 0 {
        bail!("--groups must be at least 1");
    }
    let base = QuantSpec::new(8, quant_type, groups);
    let input = &args.input;
    let file = crate::open_tensors(input)?;
    let (layers, others): (Vec<&TensorEntry>, Vec<&TensorEntry>) =
        file.entries().iter().partition(|e| {
            e.shape.len() >= 2
                && matches!(e.dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
        });
    if layers.is_empty() {
        bail!(
            "`{}` has no float tensor of rank ≥ 2 to allocate",
            input.display()
        );
    }
    // Refused before any tensor is read or measured (allocate refuses it too, but only after).
    if layers.len() > Schedule::MAX_LAYERS {
        bail!(
            "`{}` has {} float tensors of rank ≥ 2: at most {} (Schedule::MAX_LAYERS) are \
             allocated",
            input.display(),
            layers.len(),
            Schedule::MAX_LAYERS
        );
    }
    let mut sensitivity = match &args.sensitivity {
        Some(path) => read_sensitivities(path)?,
        None => BTreeMap::new(),
    };
    let mut curves: Vec<LayerCurve> = Vec::with_capacity(layers.len());
    for entry in &layers {
        let s = sensitivity.remove(&entry.name).unwrap_or(1.0);
        let weights = floats(&file, entry)?;
        let cols = *entry.shape.last().unwrap_or(&1);
        let rows = entry.len / cols.max(1);
        let curve = measure(&entry.name, &weights, [rows, cols], s, &base, &candidates)?;
        curves.push(curve);
    }
    if let Some(name) = sensitivity.keys().next() {
        bail!(
            "--sensitivity names `{}`, which is not a float tensor of rank ≥ 2 of `{}`",
            escape_controls(name),
            input.display()
        );
    }
    let allocation = allocate(&curves, &budget)?;
    let out = table(&curves, &allocation, &others);
    match io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// The budget the arguments give: average bits or bytes, one of them.
fn budget(args: &AllocateArgs) -> Result<Budget> {
    Ok(match (args.budget, args.budget_bytes) {
        (Some(b), None) => {
            let overhead = if args.count_scales {
                Overhead::Included
            } else {
                Overhead::Excluded
            };
            Budget::AverageBits(b, overhead)
        }
        (None, Some(bytes)) => Budget::Bytes(bytes),
        _ => bail!("give one of --budget (average bits) and --budget-bytes"),
    })
}

/// The candidate widths: `--bits`, or the default widths the grid can use, as training's
/// `auto_bits` does (asymmetric grids have no 1- or 2-bit form).
fn candidates(args: &AllocateArgs, quant_type: QuantType) -> Result<Vec<u32>> {
    let candidates = match &args.bits {
        Some(bits) => bits.clone(),
        None if quant_type == QuantType::Asymmetric => {
            let (usable, left): (Vec<u32>, Vec<u32>) =
                DEFAULT_CANDIDATES.iter().partition(|&&b| b >= 3);
            eprintln!(
                "moq allocate: leaving out {left:?} bits of the default widths: asymmetric grids \
                 are 3 bits or more"
            );
            usable
        }
        None => DEFAULT_CANDIDATES.to_vec(),
    };
    if let Some(b) = candidates.iter().find(|b| !(1..=16).contains(*b)) {
        bail!("--bits: {b} is outside 1..=16");
    }
    Ok(candidates)
}

/// The CSV table of the allocation, the tensors left unquantized and the average width.
fn table(curves: &[LayerCurve], allocation: &Allocation, others: &[&TensorEntry]) -> String {
    let mut out = String::from("tensor,params,bits,error\n");
    for (curve, bits) in curves.iter().zip(&allocation.bits) {
        let error = curve
            .options
            .iter()
            .find(|o| o.bits == *bits)
            .map_or(f64::NAN, |o| o.error);
        out.push_str(&format!(
            "{},{},{bits},{error:.6e}\n",
            csv_field(&curve.name),
            curve.params
        ));
    }
    for e in others {
        out.push_str(&format!("unquantized: {}\n", escape_controls(&e.name)));
    }
    out.push_str(&format!("average bits = {:.4}\n", allocation.average_bits));
    out
}

/// A tensor's values in f32 (the quantizer's precision).
fn floats(file: &TensorFile, entry: &TensorEntry) -> Result<Vec<f32>> {
    Ok(match entry.dtype {
        Dtype::F32 => file.read_values::<f32>(entry)?,
        Dtype::F16 => file
            .read_values::<f16>(entry)?
            .into_iter()
            .map(f16::to_f32)
            .collect(),
        Dtype::BF16 => file
            .read_values::<bf16>(entry)?
            .into_iter()
            .map(bf16::to_f32)
            .collect(),
        Dtype::F64 => file
            .read_values::<f64>(entry)?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => bail!(
            "tensor `{}`: dtype {other:?} cannot be quantized",
            escape_controls(&entry.name)
        ),
    })
}

/// `--sensitivity FILE.json`: an object of tensor names to numbers ≥ 0.
fn read_sensitivities(path: &std::path::Path) -> Result<BTreeMap<String, f64>> {
    let cannot = || format!("--sensitivity `{}`", path.display());
    let bytes = read_limited(path, MAX_CONFIG_BYTES)
        .map_err(|e| anyhow::anyhow!(file_reason(e)))
        .with_context(cannot)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("not UTF-8 text ({e})"))
        .with_context(cannot)?;
    let Value::Object(map) = json::parse_unique(&text).with_context(cannot)? else {
        bail!(
            "{}: expected an object of tensor names to sensitivities",
            cannot()
        );
    };
    map.into_iter()
        .map(|(name, v)| match v.as_f64() {
            Some(s) if s.is_finite() && s >= 0.0 => Ok((name, s)),
            _ => bail!(
                "{}: `{}` = {v}: a sensitivity is a number ≥ 0",
                cannot(),
                escape_controls(&name)
            ),
        })
        .collect()
}

/// A CSV field: quoted when it holds a comma, a quote or a line break; control characters
/// escaped.
fn csv_field(name: &str) -> String {
    let name = escape_controls(name);
    if name.contains([',', '"']) {
        format!("\"{}\"", name.replace('"', "\"\""))
    } else {
        name
    }
}

//! `moq quantize`: fake-quantize the float tensors of a safetensors file, keeping dtypes and
//! metadata; the other tensors are copied unchanged.

use anyhow::{Result, bail};
use half::{bf16, f16};
use moq_core::input::{TensorEntry, TensorFile, swap_little_endian};
use moq_core::{Element, NoiseKey, QuantSpec, QuantType, Rounding, fake_quantize_in_place};
use safetensors::Dtype;

use crate::output::Output;
use crate::{QuantizeArgs, RoundingArg, TypeArg, read_config};

/// Runs the subcommand. The input is read header first and one tensor at a time, and the
/// output streamed, so memory peaks at about one copy of the largest tensor (a quantized f64
/// tensor: its bytes and an f32 copy, 1.5 times).
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let base = match &args.config {
        Some(path) => {
            let config = read_config(path)?;
            QuantSpec::from_config(&config, args.bits)
        }
        None => {
            let quant_type = match args.quant_type {
                Some(TypeArg::Asymmetric) => QuantType::Asymmetric,
                _ => QuantType::Symmetric,
            };
            let mut spec = QuantSpec::new(args.bits, quant_type, args.groups.unwrap_or(1));
            if let Some(RoundingArg::Stochastic) = args.rounding {
                spec.rounding = Rounding::Stochastic;
            }
            spec
        }
    };
    if base.groups == 0 {
        bail!("--groups must be at least 1");
    }
    let input = &args.input;
    let file = crate::open_tensors(input)?;
    refuse_same_file(input, &args.output)?;
    let entries = file.entries();
    let layout: Vec<(&str, Dtype, &[usize])> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.dtype, e.shape.as_slice()))
        .collect();
    let header = moq_core::input::safetensors_header(&layout, file.metadata())?;
    let mut out = Output::create(&args.output)?;
    out.write(&header)?;
    let (mut quantized, mut copied) = (0usize, 0usize);
    for (stream, entry) in entries.iter().enumerate() {
        let float = matches!(
            entry.dtype,
            Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64
        );
        if float && (args.all || entry.shape.len() >= 2) {
            let spec = QuantSpec {
                noise: NoiseKey {
                    seed: args.seed,
                    step: 0,
                    stream: stream as u64,
                },
                ..base
            };
            quantize_tensor(&file, entry, &spec, &mut out)?;
            quantized += 1;
        } else {
            out.write(&file.read(entry)?)?;
            copied += 1;
        }
    }
    out.commit()?;
    crate::say(&format!(
        "moq: {} → {}: {quantized} tensor(s) fake-quantized to {} bits ({}, {} group(s), {}), {copied} copied unchanged",
        input.display(),
        args.output.display(),
        base.bits,
        base.quant_type.as_str(),
        base.groups,
        base.rounding.as_str()
    ));
    Ok(())
}

/// Refuses an output that is the input file itself (by path, link or hard link): the output
/// replaces its target, and the input is what the user would lose.
fn refuse_same_file(input: &std::path::Path, output: &std::path::Path) -> Result<()> {
    let (Ok(a), Ok(b)) = (std::fs::metadata(input), std::fs::metadata(output)) else {
        return Ok(());
    };
    #[cfg(unix)]
    let same = {
        use std::os::unix::fs::MetadataExt;
        (a.dev(), a.ino()) == (b.dev(), b.ino())
    };
    #[cfg(not(unix))]
    let same = {
        let _ = (a, b);
        std::fs::canonicalize(input).ok() == std::fs::canonicalize(output).ok()
    };
    if same {
        bail!(
            "--output `{}` is the input file `{}`: write to another file (the input is never \
             replaced)",
            output.display(),
            input.display()
        );
    }
    Ok(())
}

/// Reads `entry`, fake-quantizes it in place in its own dtype and appends its bytes to `out`.
fn quantize_tensor(
    file: &TensorFile,
    entry: &TensorEntry,
    spec: &QuantSpec,
    out: &mut Output,
) -> Result<()> {
    /// The values of `entry` read straight into a typed buffer (no second copy), quantized in
    /// place, written back out little-endian.
    fn run<T: Element + bytemuck::Pod>(
        file: &TensorFile,
        entry: &TensorEntry,
        spec: &QuantSpec,
        out: &mut Output,
    ) -> Result<()> {
        let mut values = file.read_values::<T>(entry)?;
        fake_quantize_in_place(&entry.name, &mut values, spec)?;
        swap_little_endian(&mut values);
        out.write(bytemuck::cast_slice(&values))
    }
    let name = &entry.name;
    match entry.dtype {
        Dtype::F32 => run::<f32>(file, entry, spec, out),
        Dtype::F16 => run::<f16>(file, entry, spec, out),
        Dtype::BF16 => run::<bf16>(file, entry, spec, out),
        Dtype::F64 => {
            // Quantized through f32: the grid values q·s are f32 numbers, stored back exactly.
            let wide = file.read_values::<f64>(entry)?;
            if let Some(index) = wide
                .iter()
                .position(|v| v.is_finite() && v.abs() > f32::MAX as f64)
            {
                bail!("tensor `{name}`: element {index} does not fit in f32; nothing was written");
            }
            let mut values: Vec<f32> = wide.iter().map(|&v| v as f32).collect();
            drop(wide);
            fake_quantize_in_place(name, &mut values, spec)?;
            let mut back: Vec<f64> = values.into_iter().map(f64::from).collect();
            swap_little_endian(&mut back);
            out.write(bytemuck::cast_slice(&back))
        }
        other => bail!("tensor `{name}`: dtype {other:?} cannot be quantized"),
    }
}

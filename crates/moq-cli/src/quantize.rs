//! `moq quantize`: fake-quantize the float tensors of a safetensors file, keeping dtypes.

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use half::{bf16, f16};
use moq_core::{Element, NoiseKey, QuantSpec, QuantType, Rounding, fake_quantize};
use safetensors::{Dtype, SafeTensors, View};

use crate::{QuantizeArgs, RoundingArg, TypeArg, read_config, write_whole};

/// A tensor to write: borrowed when copied unchanged, owned when quantized.
struct OutTensor<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

impl View for &OutTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Runs the subcommand.
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
    let bytes =
        std::fs::read(input).with_context(|| format!("cannot read `{}`", input.display()))?;
    let file = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("`{}` is not a valid safetensors file", input.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)?;
    let metadata: Option<HashMap<String, String>> = header.metadata().clone();

    let mut names: Vec<&str> = file.names();
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    let (mut quantized, mut copied) = (0usize, 0usize);
    for (stream, name) in names.iter().enumerate() {
        let view = file.tensor(name)?;
        let float = matches!(
            view.dtype(),
            Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64
        );
        let selected = float && (args.all || view.shape().len() >= 2);
        let data = if selected {
            let spec = QuantSpec {
                noise: NoiseKey {
                    seed: args.seed,
                    step: 0,
                    stream: stream as u64,
                },
                ..base
            };
            quantized += 1;
            Cow::Owned(quantize_bytes(name, view.dtype(), view.data(), &spec)?)
        } else {
            copied += 1;
            Cow::Borrowed(view.data())
        };
        out.push((
            name.to_string(),
            OutTensor {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data,
            },
        ));
    }
    let serialized = safetensors::serialize(out.iter().map(|(n, t)| (n.as_str(), t)), metadata)
        .context("cannot serialize the output")?;
    write_whole(&args.output, &serialized)?;
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

fn quantize_bytes(name: &str, dtype: Dtype, data: &[u8], spec: &QuantSpec) -> Result<Vec<u8>> {
    fn run<T: Element, const N: usize>(
        name: &str,
        data: &[u8],
        spec: &QuantSpec,
        from: fn([u8; N]) -> T,
        to: fn(T) -> [u8; N],
    ) -> Result<Vec<u8>> {
        let values: Vec<T> = data
            .chunks_exact(N)
            .map(|c| from(c.try_into().expect("chunk of N bytes")))
            .collect();
        let mut out = values.clone();
        fake_quantize(name, &values, &mut out, spec)?;
        Ok(out.into_iter().flat_map(to).collect())
    }
    match dtype {
        Dtype::F32 => run(name, data, spec, f32::from_le_bytes, f32::to_le_bytes),
        Dtype::F16 => run(name, data, spec, f16::from_le_bytes, f16::to_le_bytes),
        Dtype::BF16 => run(name, data, spec, bf16::from_le_bytes, bf16::to_le_bytes),
        Dtype::F64 => {
            // Quantized through f32: the grid values q·s are f32 numbers, stored back exactly.
            let wide: Vec<f32> = data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect();
            let non_finite = data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .position(|v| v.is_finite() && v.abs() > f32::MAX as f64);
            if let Some(index) = non_finite {
                bail!("tensor `{name}`: element {index} does not fit in f32; nothing was written");
            }
            let mut out = wide.clone();
            fake_quantize(name, &wide, &mut out, spec)?;
            Ok(out
                .into_iter()
                .flat_map(|v| (v as f64).to_le_bytes())
                .collect())
        }
        other => bail!("tensor `{name}`: dtype {other:?} cannot be quantized"),
    }
}

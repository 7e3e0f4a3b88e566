//! [`LoadReport`]: what a load put where, and the bytes the model then holds on its device.

use std::fmt;

use crate::backend::Activations;

/// How a tensor of the file is held by the loaded model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// Packed codes in a [`super::MoqLinear`], multiplied by the low-bit matmul with these
    /// activations ([`Activations::Int8`] only where the backend runs it and the weight's
    /// groups allow it, see [`super::load_codes_with`]).
    Codes {
        /// The activations the matmul takes.
        activations: Activations,
    },
    /// burn's own quantized tensor (`Q8S` or `Q4S`), multiplied by burn's quantized matmul.
    BurnQuantized,
    /// Dequantized into a float parameter, and why it was not served as codes.
    Dequantized {
        /// Why (the width, the grouping, the module type, or the caller asked for it).
        reason: String,
    },
    /// A float tensor of the file (bias, norm, embedding), loaded as it is.
    Float,
}

/// One tensor of the file, as loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedTensor {
    /// Its module path (`encoder.layers.0.mha.query.weight`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The bits of its codes (`None` for a float tensor).
    pub bits: Option<u32>,
    /// How the model holds it.
    pub held: Held,
    /// The bytes it takes on the device: codes, scales and zero points (`i32` words, f32
    /// scales, one `i32` zero point per group, zeros for symmetric grids; with int8
    /// activations also the codes' copy in the int8 kernel's tiles), burn's packed values and
    /// scales, or the float elements.
    pub device_bytes: usize,
}

impl LoadedTensor {
    /// Its elements.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The module the tensor belongs to: its path without the last part.
    pub fn layer(&self) -> &str {
        self.name.rsplit_once('.').map_or("", |(layer, _)| layer)
    }
}

/// What a load did, tensor by tensor, in the file's order (quantized tensors first).
///
/// Nothing is held twice: a served weight's float parameter is dropped when its codes take its
/// place. Its `Display` is a table per layer of the bytes held against f16 and f32 weights.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Every tensor of the file.
    pub tensors: Vec<LoadedTensor>,
}

/// Bytes held on the device by one layer (or the whole model), against the same elements in
/// f16 and in f32.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceBytes {
    /// Module path (empty for the whole model).
    pub layer: String,
    /// Bytes held.
    pub held: usize,
    /// The same elements in f16.
    pub f16: usize,
    /// The same elements in f32.
    pub f32: usize,
}

impl LoadReport {
    /// The tensors held as `held` (compared by kind: any `Dequantized` reason matches).
    pub fn count(&self, held: &Held) -> usize {
        self.tensors
            .iter()
            .filter(|t| std::mem::discriminant(&t.held) == std::mem::discriminant(held))
            .count()
    }

    /// Bytes on the device per layer, in the file's order.
    pub fn device_bytes(&self) -> Vec<DeviceBytes> {
        let mut layers: Vec<DeviceBytes> = Vec::new();
        for t in &self.tensors {
            let at = match layers.iter().position(|l| l.layer == t.layer()) {
                Some(at) => at,
                None => {
                    layers.push(DeviceBytes {
                        layer: t.layer().to_string(),
                        ..DeviceBytes::default()
                    });
                    layers.len() - 1
                }
            };
            let l = &mut layers[at];
            l.held += t.device_bytes;
            l.f16 += t.elements() * 2;
            l.f32 += t.elements() * 4;
        }
        layers
    }

    /// Bytes on the device for the whole model.
    pub fn total(&self) -> DeviceBytes {
        self.device_bytes()
            .into_iter()
            .fold(DeviceBytes::default(), |t, l| DeviceBytes {
                layer: String::new(),
                held: t.held + l.held,
                f16: t.f16 + l.f16,
                f32: t.f32 + l.f32,
            })
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<40} {:>12} {:>12} {:>12}  held as",
            "layer", "bytes", "f16", "f32"
        )?;
        let layers = self.device_bytes();
        for l in &layers {
            let held: Vec<String> = self
                .tensors
                .iter()
                .filter(|t| t.layer() == l.layer)
                .map(|t| {
                    let leaf = t.name.rsplit('.').next().unwrap_or(&t.name);
                    match (&t.held, t.bits) {
                        (Held::Codes { activations }, Some(b)) => match activations {
                            Activations::F32 => format!("{leaf}: {b}-bit codes"),
                            Activations::Int8 => format!("{leaf}: {b}-bit codes, int8 activations"),
                        },
                        (Held::BurnQuantized, Some(b)) => format!("{leaf}: burn Q{b}S"),
                        (Held::Dequantized { reason }, _) => {
                            format!("{leaf}: dequantized ({reason})")
                        }
                        _ => format!("{leaf}: f32"),
                    }
                })
                .collect();
            writeln!(
                f,
                "{:<40} {:>12} {:>12} {:>12}  {}",
                l.layer,
                l.held,
                l.f16,
                l.f32,
                held.join(", ")
            )?;
        }
        let t = self.total();
        let ratio = |base: usize| t.held as f64 / base.max(1) as f64;
        write!(
            f,
            "{:<40} {:>12} {:>12} {:>12}  {:.3} of f16, {:.3} of f32",
            "total",
            t.held,
            t.f16,
            t.f32,
            ratio(t.f16),
            ratio(t.f32)
        )
    }
}

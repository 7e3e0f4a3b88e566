//! Reading an export back: [`MoqFile::load`] (everything, checked) and
//! [`MoqFile::summarize`] (the same checks, keeping only what `moq inspect` prints).

use std::path::Path;

use half::f16;
use safetensors::Dtype;

use super::{Exported, Metadata, MoqFile, VERSION, file_error};
use crate::config::QuantType;
use crate::error::{Result, escape_controls};
use crate::input::TensorFile;
use crate::input::json::parse_unique;
use crate::pack::{CodeLayout, PackedCodes, PackedScales, PackedTensor};

impl MoqFile {
    /// Reads a file written by [`MoqFile::save`], checking every tensor against the metadata:
    /// the file is read header first ([`TensorFile`]), sizes from the metadata are checked
    /// before anything is allocated, each scale must be finite and not negative, each zero
    /// point within the quantizer's range, and every plain tensor finite.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::read(path, Data::All)?.0)
    }

    /// What [`MoqFile::load`] checks, without keeping any tensor or reading the codes: per
    /// tensor its name, shape, grid and stored bytes (what `moq inspect` prints). Memory follows
    /// the scales and zero points and the largest plain tensor, not the file.
    pub fn summarize(path: &Path) -> Result<Vec<Summary>> {
        Ok(Self::read(path, Data::ScalesOnly)?.1)
    }

    fn read(path: &Path, data: Data) -> Result<(Self, Vec<Summary>)> {
        let mut summaries = Vec::new();
        let st = TensorFile::open(path)?;
        let text = st
            .metadata()
            .and_then(|m| m.get("moq"))
            .ok_or_else(|| file_error(path, "no `moq` metadata: not a moq export"))?;
        let meta: Metadata = parse_unique(text)
            .and_then(serde_json::from_value)
            .map_err(|e| file_error(path, format!("metadata `moq`: {e}")))?;
        if meta.version != VERSION {
            return Err(file_error(
                path,
                format!("format version {} (this moq reads {VERSION})", meta.version),
            ));
        }
        let tensor = |name: &str, dtypes: &[Dtype]| {
            let e = st.get(name).ok_or_else(|| {
                file_error(
                    path,
                    format!("tensor `{}` is missing", escape_controls(name)),
                )
            })?;
            if !dtypes.contains(&e.dtype) {
                return Err(file_error(
                    path,
                    format!(
                        "tensor `{}` is {:?}, expected {}",
                        escape_controls(name),
                        e.dtype,
                        dtypes
                            .iter()
                            .map(|d| format!("{d:?}"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ));
            }
            Ok(e)
        };
        let mut quantized = Vec::new();
        let mut owned = std::collections::HashSet::new();
        for (name, m) in &meta.tensors {
            let shown = escape_controls(name);
            let bad = |reason: String| file_error(path, format!("`{shown}`: {reason}"));
            if m.layout != CodeLayout::Packed32 {
                return Err(bad(format!(
                    "layout {:?}; exports hold Packed32 codes (u32 words)",
                    m.layout
                )));
            }
            let len = m
                .shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("shape {:?} overflows", m.shape)))?;
            let row_len = *m.shape.last().unwrap_or(&1);
            // The codes this shape needs, computed checked, before any data is read.
            let expected =
                crate::layout::PackedShape::of_flat(len, row_len, m.bits, m.quant_type, m.groups)
                    .map_err(|e| bad(e.to_string()))?;
            let codes_name = format!("{name}.codes");
            let codes_entry = st.get(&codes_name).ok_or_else(|| {
                file_error(
                    path,
                    format!("tensor `{}` is missing", escape_controls(&codes_name)),
                )
            })?;
            if codes_entry.dtype != Dtype::U32 {
                return Err(bad(format!(
                    "`{}` is {:?}, expected U32",
                    escape_controls(&codes_name),
                    codes_entry.dtype
                )));
            }
            if codes_entry.len != expected.words() {
                return Err(bad(format!(
                    "shape {:?} at {} bits needs {} code words, `{}` holds {}",
                    m.shape,
                    m.bits,
                    expected.words(),
                    escape_controls(&codes_name),
                    codes_entry.len
                )));
            }
            let codes = match data {
                Data::All => st.read_values::<u32>(codes_entry)?,
                Data::ScalesOnly => Vec::new(),
            };
            let scales_name = format!("{name}.scales");
            let scales_entry = tensor(&scales_name, &[Dtype::F32, Dtype::F16])?;
            let scales = if scales_entry.dtype == Dtype::F16 {
                PackedScales::F16(st.read_values::<f16>(scales_entry)?)
            } else {
                PackedScales::F32(st.read_values::<f32>(scales_entry)?)
            };
            let bad_scale = match &scales {
                PackedScales::F32(s) => s.iter().copied().position(bad_scale_value),
                PackedScales::F16(s) => s.iter().map(|v| v.to_f32()).position(bad_scale_value),
            };
            if let Some(g) = bad_scale {
                let v = match &scales {
                    PackedScales::F32(s) => s[g],
                    PackedScales::F16(s) => s[g].to_f32(),
                };
                return Err(bad(format!(
                    "scale {g} is {v}; scales are finite and not negative"
                )));
            }
            let zero_points: Vec<i32> = if m.quant_type == QuantType::Asymmetric {
                let zp_name = format!("{name}.zero_points");
                owned.insert(zp_name.clone());
                st.read_values::<i32>(tensor(&zp_name, &[Dtype::I32])?)?
            } else {
                Vec::new()
            };
            // Stored as z − 2^(b−1); the quantizer keeps |z| ≤ 2^30.
            let offset = 1i64 << m.bits.clamp(1, 16).saturating_sub(1);
            if let Some(g) = zero_points
                .iter()
                .position(|&z| (z as i64 + offset).abs() > MAX_ZERO_POINT)
            {
                return Err(bad(format!(
                    "zero point {g} is {} (stored {}); a quantizer keeps |z| ≤ {MAX_ZERO_POINT}",
                    zero_points[g] as i64 + offset,
                    zero_points[g]
                )));
            }
            owned.insert(codes_name);
            owned.insert(scales_name);
            let packed = PackedTensor {
                bits: m.bits,
                quant_type: m.quant_type,
                groups: m.groups,
                len,
                row_len,
                codes: PackedCodes::Words(codes),
                scales,
                zero_points,
            };
            let stored = codes_entry.bytes + scales_entry.bytes + packed.zero_points.len() * 4;
            match data {
                Data::All => packed.check(),
                Data::ScalesOnly => expected.check_parts(
                    codes_entry.len,
                    scales_entry.len,
                    packed.zero_points.len(),
                ),
            }
            .map_err(|e| bad(e.to_string()))?;
            summaries.push(Summary {
                name: name.clone(),
                shape: m.shape.clone(),
                grid: Some((m.bits, m.quant_type, m.groups)),
                bytes: stored,
            });
            quantized.push(Exported {
                name: name.clone(),
                shape: m.shape.clone(),
                packed,
            });
        }
        let mut float = Vec::new();
        for e in st.entries().iter().filter(|e| !owned.contains(&e.name)) {
            if e.dtype != Dtype::F32 {
                return Err(file_error(
                    path,
                    format!(
                        "tensor `{}` is {:?}; plain tensors are f32",
                        escape_controls(&e.name),
                        e.dtype
                    ),
                ));
            }
            summaries.push(Summary {
                name: e.name.clone(),
                shape: e.shape.clone(),
                grid: None,
                bytes: e.bytes,
            });
            // Read for the finiteness check in either mode, kept only by `load`: memory
            // follows one plain tensor.
            let values = st.read_values::<f32>(e)?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(file_error(
                    path,
                    format!(
                        "tensor `{}`: element {i} is {}; a model's parameters are finite",
                        escape_controls(&e.name),
                        values[i]
                    ),
                ));
            }
            if data == Data::All {
                float.push((e.name.clone(), e.shape.clone(), values));
            }
        }
        Ok((Self { quantized, float }, summaries))
    }
}

/// What [`MoqFile::read`] reads of the tensors' data.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Data {
    /// Everything.
    All,
    /// Scales and zero points, and the plain tensors one at a time to check them (for
    /// [`MoqFile::summarize`]).
    ScalesOnly,
}

/// One tensor of an export, as [`MoqFile::summarize`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Its name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Bits, grid and groups of a quantized tensor; `None` for a plain f32 tensor.
    pub grid: Option<(u32, QuantType, usize)>,
    /// Bytes stored: codes, scales and zero points, or the f32 values.
    pub bytes: usize,
}

impl Summary {
    /// Elements (the shape's product; checked when the file was read).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packed shape of a quantized tensor that `moq_burn::load_codes` serves as codes in a
    /// `MoqLinear`: 2-d, 1 to 8 bits. `None` for a float tensor and for one it serves
    /// dequantized.
    fn served_shape(&self) -> Option<crate::PackedShape> {
        let (bits, quant_type, groups) = self.grid?;
        match self.shape[..] {
            [rows, row_len] if crate::KERNEL_BITS.contains(&bits) => {
                crate::PackedShape::new([rows, row_len], bits, quant_type, groups).ok()
            }
            _ => None,
        }
    }

    /// Whether it is quantized but `moq_burn::load_codes` serves it dequantized (wider than 8
    /// bits, or not 2-d).
    pub fn served_dequantized(&self) -> bool {
        self.grid.is_some() && self.served_shape().is_none()
    }

    /// Bytes it takes on the device once served by `moq_burn::load_codes` (f32 scales): codes,
    /// scales and zero points when served as codes ([`crate::PackedShape::device_bytes`]), f32
    /// values otherwise.
    pub fn served_bytes(&self) -> usize {
        self.served_shape()
            .map_or(self.len() * 4, |s| s.device_bytes(4))
    }
}

/// The largest zero point magnitude the quantizer writes (its `ZERO_LIMIT`).
const MAX_ZERO_POINT: i64 = 1 << 30;

/// A scale a quantizer cannot have written: NaN, infinite or negative.
fn bad_scale_value(v: f32) -> bool {
    !v.is_finite() || v < 0.0
}

//! Reading an export back: [`MoqFile::load`] (everything, checked) and
//! [`MoqFile::summarize`] (the same checks, keeping only what `moq inspect` prints).

use std::collections::HashSet;
use std::path::Path;

use half::f16;
use safetensors::Dtype;

use super::{Exported, Metadata, MoqFile, TensorMeta, VERSION, file_error};
use crate::config::QuantType;
use crate::error::{Result, escape_controls};
use crate::input::json::parse_unique;
use crate::input::{TensorEntry, TensorFile};
use crate::layout::PackedShape;
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
        let st = TensorFile::open(path)?;
        let meta = read_metadata(path, &st)?;
        let mut reader = Reader {
            path,
            st: &st,
            data,
            owned: HashSet::new(),
        };
        let mut summaries = Vec::new();
        let mut quantized = Vec::new();
        for (name, m) in &meta.tensors {
            let (exported, summary) = reader.quantized(name, m)?;
            summaries.push(summary);
            quantized.push(exported);
        }
        let mut float = Vec::new();
        for e in st
            .entries()
            .iter()
            .filter(|e| !reader.owned.contains(&e.name))
        {
            let (summary, values) = reader.plain(e)?;
            summaries.push(summary);
            if data == Data::All {
                float.push((e.name.clone(), e.shape.clone(), values));
            }
        }
        Ok((Self { quantized, float }, summaries))
    }
}

/// The `moq` metadata of `st`, of this format version.
fn read_metadata(path: &Path, st: &TensorFile) -> Result<Metadata> {
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
    Ok(meta)
}

/// One read of an export: the file, what to keep, and the tensors the metadata owns so far
/// (codes, scales, zero points; the rest are plain tensors).
struct Reader<'a> {
    path: &'a Path,
    st: &'a TensorFile,
    data: Data,
    owned: HashSet<String>,
}

impl<'a> Reader<'a> {
    /// The entry `name`, owned by the metadata from now on.
    fn entry_any(&mut self, name: &str) -> Result<&'a TensorEntry> {
        let shown = escape_controls(name);
        let e = self
            .st
            .get(name)
            .ok_or_else(|| file_error(self.path, format!("tensor `{shown}` is missing")))?;
        self.owned.insert(name.to_string());
        Ok(e)
    }

    /// The entry `name`, of one of `dtypes`, owned by the metadata from now on.
    fn entry(&mut self, name: &str, dtypes: &[Dtype]) -> Result<&'a TensorEntry> {
        let e = self.entry_any(name)?;
        if !dtypes.contains(&e.dtype) {
            let shown = escape_controls(name);
            let expected: Vec<String> = dtypes.iter().map(|d| format!("{d:?}")).collect();
            return Err(file_error(
                self.path,
                format!(
                    "tensor `{shown}` is {:?}, expected {}",
                    e.dtype,
                    expected.join(" or ")
                ),
            ));
        }
        Ok(e)
    }

    /// The quantized tensor `name` of the metadata, checked, and its summary.
    fn quantized(&mut self, name: &str, m: &TensorMeta) -> Result<(Exported, Summary)> {
        let shown = escape_controls(name);
        let bad = |reason: String| file_error(self.path, format!("`{shown}`: {reason}"));
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
        let expected = PackedShape::of_flat(len, row_len, m.bits, m.quant_type, m.groups)
            .map_err(|e| bad(e.to_string()))?;
        let (codes, codes_len, codes_bytes) = self.codes(name, m, &expected)?;
        let (scales, scales_len, scales_bytes) = self.scales(name)?;
        let zero_points = self.zero_points(name, m)?;
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
        match self.data {
            Data::All => packed.check(),
            Data::ScalesOnly => {
                expected.check_parts(codes_len, scales_len, packed.zero_points.len())
            }
        }
        .map_err(|e| bad(e.to_string()))?;
        let summary = Summary {
            name: name.to_string(),
            shape: m.shape.clone(),
            grid: Some((m.bits, m.quant_type, m.groups)),
            bytes: codes_bytes + scales_bytes + packed.zero_points.len() * 4,
        };
        let exported = Exported {
            name: name.to_string(),
            shape: m.shape.clone(),
            packed,
        };
        Ok((exported, summary))
    }

    /// The code words of `name` (none when only summarizing), their count and stored bytes.
    fn codes(
        &mut self,
        name: &str,
        m: &TensorMeta,
        expected: &PackedShape,
    ) -> Result<(Vec<u32>, usize, usize)> {
        let codes_name = format!("{name}.codes");
        let shown = escape_controls(&codes_name);
        let path = self.path;
        let bad =
            |reason: String| file_error(path, format!("`{}`: {reason}", escape_controls(name)));
        let e = self.entry_any(&codes_name)?;
        if e.dtype != Dtype::U32 {
            return Err(bad(format!("`{shown}` is {:?}, expected U32", e.dtype)));
        }
        if e.len != expected.words() {
            return Err(bad(format!(
                "shape {:?} at {} bits needs {} code words, `{shown}` holds {}",
                m.shape,
                m.bits,
                expected.words(),
                e.len
            )));
        }
        let codes = match self.data {
            Data::All => self.st.read_values::<u32>(e)?,
            Data::ScalesOnly => Vec::new(),
        };
        Ok((codes, e.len, e.bytes))
    }

    /// The scales of `name` (finite, not negative), their count and stored bytes.
    fn scales(&mut self, name: &str) -> Result<(PackedScales, usize, usize)> {
        let e = self.entry(&format!("{name}.scales"), &[Dtype::F32, Dtype::F16])?;
        let scales = if e.dtype == Dtype::F16 {
            PackedScales::F16(self.st.read_values::<f16>(e)?)
        } else {
            PackedScales::F32(self.st.read_values::<f32>(e)?)
        };
        let bad = match &scales {
            PackedScales::F32(s) => s
                .iter()
                .copied()
                .enumerate()
                .find(|(_, v)| bad_scale_value(*v)),
            PackedScales::F16(s) => s
                .iter()
                .map(|v| v.to_f32())
                .enumerate()
                .find(|(_, v)| bad_scale_value(*v)),
        };
        if let Some((g, v)) = bad {
            return Err(file_error(
                self.path,
                format!(
                    "`{}`: scale {g} is {v}; scales are finite and not negative",
                    escape_controls(name)
                ),
            ));
        }
        Ok((scales, e.len, e.bytes))
    }

    /// The zero points of `name` (asymmetric grids only), within the quantizer's range.
    fn zero_points(&mut self, name: &str, m: &TensorMeta) -> Result<Vec<i32>> {
        if m.quant_type != QuantType::Asymmetric {
            return Ok(Vec::new());
        }
        let e = self.entry(&format!("{name}.zero_points"), &[Dtype::I32])?;
        let zero_points = self.st.read_values::<i32>(e)?;
        // Stored as z − 2^(b−1); the quantizer keeps |z| ≤ 2^30.
        let offset = 1i64 << m.bits.clamp(1, 16).saturating_sub(1);
        if let Some(g) = zero_points
            .iter()
            .position(|&z| (z as i64 + offset).abs() > MAX_ZERO_POINT)
        {
            return Err(file_error(
                self.path,
                format!(
                    "`{}`: zero point {g} is {} (stored {}); a quantizer keeps |z| ≤ \
                     {MAX_ZERO_POINT}",
                    escape_controls(name),
                    zero_points[g] as i64 + offset,
                    zero_points[g]
                ),
            ));
        }
        Ok(zero_points)
    }

    /// A plain tensor: f32 and finite, read in either mode (memory follows one plain tensor).
    fn plain(&self, e: &TensorEntry) -> Result<(Summary, Vec<f32>)> {
        let shown = escape_controls(&e.name);
        if e.dtype != Dtype::F32 {
            return Err(file_error(
                self.path,
                format!("tensor `{shown}` is {:?}; plain tensors are f32", e.dtype),
            ));
        }
        let values = self.st.read_values::<f32>(e)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(file_error(
                self.path,
                format!(
                    "tensor `{shown}`: element {i} is {}; a model's parameters are finite",
                    values[i]
                ),
            ));
        }
        let summary = Summary {
            name: e.name.clone(),
            shape: e.shape.clone(),
            grid: None,
            bytes: e.bytes,
        };
        Ok((summary, values))
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
    fn served_shape(&self) -> Option<PackedShape> {
        let (bits, quant_type, groups) = self.grid?;
        match self.shape[..] {
            [rows, row_len] if crate::KERNEL_BITS.contains(&bits) => {
                PackedShape::new([rows, row_len], bits, quant_type, groups).ok()
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

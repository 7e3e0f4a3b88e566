//! The export format: a safetensors file holding a model's quantized tensors as packed codes
//! with their per-group scales (and zero points), and its other tensors in f32, so other tools
//! can read it (the guide's algorithm page (docs/algorithm.md), "Export").
//!
//! For a quantized tensor `name` the file holds `name.codes` (u32 words, moq-core's
//! [`CodeLayout::Packed32`] layout), `name.scales` (f32 or f16, one per group) and, for
//! asymmetric grids, `name.zero_points` (i32, stored `z − 2^(b−1)`). The `__metadata__` entry
//! `moq` is JSON: a format version and, per quantized tensor, its shape, bits, grid, groups and
//! layout. Any other tensor of the file is a plain f32 tensor under its own name.
//!
//! ```
//! use moq_core::export::{Exported, MoqFile};
//! use moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, pack, quantize};
//!
//! let w: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
//! let q = quantize("fc.weight", &w, &QuantSpec::new(4, QuantType::Symmetric, 4)).unwrap();
//! let file = MoqFile {
//!     quantized: vec![Exported {
//!         name: "fc.weight".into(),
//!         shape: vec![4, 8],
//!         packed: pack(&q, 8, CodeLayout::Packed32, ScaleFormat::F32).unwrap(),
//!     }],
//!     float: vec![("fc.bias".into(), vec![8], vec![0.5; 8])],
//! };
//! let dir = std::env::temp_dir().join(format!("moq-export-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("model.safetensors");
//! file.save(&path).unwrap();
//! assert_eq!(MoqFile::load(&path).unwrap(), file);
//! # std::fs::remove_dir_all(dir).unwrap();
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::config::QuantType;
use crate::error::{MoqError, Result};
use crate::pack::{CodeLayout, PackedCodes, PackedScales, PackedTensor};

mod load;

pub use load::Summary;

/// The format version written and read.
pub const VERSION: u32 = 1;

/// A quantized tensor of an export.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    /// The tensor's name (a module path such as `encoder.layers.0.fc.weight`).
    pub name: String,
    /// Its shape (the last dimension is the packed row length).
    pub shape: Vec<usize>,
    /// Codes, scales and zero points.
    pub packed: PackedTensor,
}

/// The contents of an export file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MoqFile {
    /// The quantized tensors.
    pub quantized: Vec<Exported>,
    /// The other tensors, in f32: `(name, shape, values)`.
    pub float: Vec<(String, Vec<usize>, Vec<f32>)>,
}

#[derive(Serialize, Deserialize)]
struct Metadata {
    version: u32,
    tensors: BTreeMap<String, TensorMeta>,
}

#[derive(Serialize, Deserialize)]
struct TensorMeta {
    shape: Vec<usize>,
    bits: u32,
    quant_type: QuantType,
    groups: usize,
    layout: CodeLayout,
}

fn file_error(path: &Path, reason: impl Into<String>) -> MoqError {
    MoqError::file(path, reason)
}

fn bytes_of<T: Copy>(values: &[T], to: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

impl MoqFile {
    /// Writes the file whole: to a temporary file next to `path`, then renamed over it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<Stored> = Vec::new();
        let mut meta = BTreeMap::new();
        for e in &self.quantized {
            let stored = e.stored().map_err(|reason| file_error(path, reason))?;
            tensors.extend(stored);
            meta.insert(e.name.clone(), e.meta());
        }
        for (name, shape, values) in &self.float {
            if shape.iter().product::<usize>() != values.len() {
                return Err(file_error(
                    path,
                    format!(
                        "`{name}`: shape {shape:?} does not hold {} values",
                        values.len()
                    ),
                ));
            }
            tensors.push((
                name.clone(),
                Dtype::F32,
                shape.clone(),
                bytes_of(values, |v| v.to_le_bytes().to_vec()),
            ));
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| file_error(path, format!("`{name}`: {e}")))
            })
            .collect::<Result<_>>()?;
        let metadata = serde_json::to_string(&Metadata {
            version: VERSION,
            tensors: meta,
        })
        .map_err(|e| file_error(path, e.to_string()))?;
        let info = HashMap::from([("moq".to_string(), metadata)]);
        let bytes = safetensors::serialize(views, Some(info))
            .map_err(|e| file_error(path, e.to_string()))?;
        write_whole(path, &bytes)
    }
}

/// A tensor as the file stores it: name, dtype, shape and little-endian bytes.
type Stored = (String, Dtype, Vec<usize>, Vec<u8>);

impl Exported {
    /// Its codes, scales and (asymmetric grids) zero points as stored tensors, or why it
    /// cannot be exported.
    fn stored(&self) -> std::result::Result<Vec<Stored>, String> {
        let (name, p) = (&self.name, &self.packed);
        let PackedCodes::Words(words) = &p.codes else {
            return Err(format!("`{name}`: only Packed32 codes are exported"));
        };
        if self.shape.iter().product::<usize>() != p.len || self.shape.last() != Some(&p.row_len) {
            return Err(format!(
                "`{name}`: shape {:?} does not match {} elements in rows of {}",
                self.shape, p.len, p.row_len
            ));
        }
        let (dtype, scales) = match &p.scales {
            PackedScales::F32(s) => (Dtype::F32, bytes_of(s, |v| v.to_le_bytes().to_vec())),
            PackedScales::F16(s) => (Dtype::F16, bytes_of(s, |v| v.to_le_bytes().to_vec())),
        };
        let mut stored = vec![
            (
                format!("{name}.codes"),
                Dtype::U32,
                vec![words.len()],
                bytes_of(words, |w| w.to_le_bytes().to_vec()),
            ),
            (format!("{name}.scales"), dtype, vec![p.groups], scales),
        ];
        if p.quant_type == QuantType::Asymmetric {
            stored.push((
                format!("{name}.zero_points"),
                Dtype::I32,
                vec![p.zero_points.len()],
                bytes_of(&p.zero_points, |v| v.to_le_bytes().to_vec()),
            ));
        }
        Ok(stored)
    }

    /// Its entry in the `moq` metadata.
    fn meta(&self) -> TensorMeta {
        TensorMeta {
            shape: self.shape.clone(),
            bits: self.packed.bits,
            quant_type: self.packed.quant_type,
            groups: self.packed.groups,
            layout: CodeLayout::Packed32,
        }
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`: the file is
/// whole or absent (the temporary file is removed on an error or a panic).
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".moq-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| file_error(path, format!("cannot create a file beside it: {e}")))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| file_error(path, e.to_string()))?;
    tmp.persist(path)
        .map_err(|e| file_error(path, e.error.to_string()))?;
    Ok(())
}

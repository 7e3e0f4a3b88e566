//! A safetensors file read header first: the 8-byte header length, the JSON header (duplicate
//! names refused), every tensor's dtype, shape and offsets checked against each other and
//! against the file's real length, all before a byte of tensor data is read. Tensor data is
//! then read one tensor at a time, when asked for, so memory follows the tensor in use, not
//! the file. The rules are the safetensors format's own (tensors packed from offset 0 with no
//! gap or overlap, the last one ending at the end of the file); errors name the tensor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde::Deserialize;
use serde_json::Value;

use super::{json, open_regular};
use crate::error::{MoqError, Result, escape_controls};

/// The largest header read, as in the safetensors crate: 100 MB.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor of a [`TensorFile`].
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its number of elements (the shape's product, checked).
    pub len: usize,
    /// Where its bytes are, from the start of the file.
    start: u64,
    /// Its length in bytes.
    pub bytes: usize,
}

/// An open safetensors file whose header has been checked.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    file: File,
    /// By name.
    entries: Vec<TensorEntry>,
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct Info {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

impl TensorFile {
    /// Opens and checks `path` (a regular file; see the module docs for what is checked).
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| MoqError::file(path, reason);
        let (mut file, file_len) = open_regular(path)?;
        let header = read_header(&mut file, file_len).map_err(bad)?;
        let data_start = 8 + header.len() as u64;
        let Value::Object(header) =
            json::parse_unique(&header).map_err(|e| bad(format!("header: {e}")))?
        else {
            return Err(bad("the header is not a JSON object".into()));
        };
        let data_len = file_len - data_start;
        let mut metadata = None;
        let mut entries = Vec::with_capacity(header.len());
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = Some(
                    serde_json::from_value::<BTreeMap<String, String>>(value)
                        .map_err(|e| bad(format!("`__metadata__` is not a map of strings: {e}")))?,
                );
                continue;
            }
            let shown = escape_controls(&name);
            let entry = entry(name, value, data_start, data_len)
                .map_err(|reason| bad(format!("tensor `{shown}`: {reason}")))?;
            entries.push(entry);
        }
        check_packed(&entries, data_start, file_len).map_err(bad)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            entries,
            metadata,
        })
    }

    /// The tensors, sorted by name.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The `__metadata__` map, if the file has one.
    pub fn metadata(&self) -> Option<&BTreeMap<String, String>> {
        self.metadata.as_ref()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `entry`'s bytes into `out` (exactly `entry.bytes` long).
    pub fn read_into(&self, entry: &TensorEntry, out: &mut [u8]) -> Result<()> {
        let bad = |reason: String| {
            MoqError::file(
                &self.path,
                format!("tensor `{}`: {reason}", escape_controls(&entry.name)),
            )
        };
        if out.len() != entry.bytes {
            return Err(bad(format!(
                "{} bytes asked for, it has {}",
                out.len(),
                entry.bytes
            )));
        }
        let mut file = &self.file;
        file.seek(SeekFrom::Start(entry.start))
            .and_then(|_| file.read_exact(out))
            .map_err(|e| bad(format!("cannot read its data: {e}")))
    }

    /// `entry`'s values as `T`, read straight into the vector (one copy of the data, converted
    /// from little-endian in place); `T` must have the size of `entry`'s dtype.
    pub fn read_values<T: bytemuck::Pod>(&self, entry: &TensorEntry) -> Result<Vec<T>> {
        if entry.dtype.bitsize() != 8 * size_of::<T>() {
            return Err(MoqError::file(
                &self.path,
                format!(
                    "tensor `{}`: {:?} values cannot be read as {}",
                    escape_controls(&entry.name),
                    entry.dtype,
                    std::any::type_name::<T>()
                ),
            ));
        }
        let mut values = vec![T::zeroed(); entry.len];
        self.read_into(entry, bytemuck::cast_slice_mut(&mut values))?;
        swap_little_endian(&mut values);
        Ok(values)
    }

    /// `entry`'s bytes.
    pub fn read(&self, entry: &TensorEntry) -> Result<Vec<u8>> {
        let mut out = vec![0u8; entry.bytes];
        self.read_into(entry, &mut out)?;
        Ok(out)
    }
}

/// Converts `values` between little-endian (safetensors' byte order) and this machine's, in
/// place: nothing to do on a little-endian machine, and its own inverse on any.
pub fn swap_little_endian<T: bytemuck::Pod>(values: &mut [T]) {
    if cfg!(target_endian = "big") {
        let size = size_of::<T>();
        for v in bytemuck::cast_slice_mut::<T, u8>(values).chunks_exact_mut(size) {
            v.reverse();
        }
    }
}

/// The header of a safetensors file holding `tensors` (name, dtype, shape) in that order,
/// packed from offset 0, with `metadata`: the 8-byte length and the JSON, padded with spaces
/// to a multiple of 8 bytes as the safetensors crate writes it. The data follows it.
pub fn safetensors_header(
    tensors: &[(&str, Dtype, &[usize])],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        header.insert("__metadata__".into(), serde_json::json!(m));
    }
    let mut offset = 0u64;
    for &(name, dtype, shape) in tensors {
        let bytes = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize()))
            .filter(|b| b % 8 == 0)
            .map(|b| (b / 8) as u64)
            .ok_or_else(|| MoqError::Packed {
                reason: format!(
                    "tensor `{}`: shape {shape:?} of {dtype:?} is not a whole number of bytes",
                    escape_controls(name)
                ),
            })?;
        header.insert(
            name.to_owned(),
            serde_json::json!({
                "dtype": dtype,
                "shape": shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| MoqError::Packed {
        reason: e.to_string(),
    })?;
    json.resize(json.len().div_ceil(8) * 8, b' ');
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    Ok(out)
}

/// The header text of a safetensors file of `file_len` bytes (its length first, within the
/// format's limit and the file), or why not.
fn read_header(file: &mut File, file_len: u64) -> std::result::Result<String, String> {
    if file_len < 8 {
        return Err(format!(
            "{file_len} bytes: too short for a safetensors file (8-byte header length first)"
        ));
    }
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|e| e.to_string())?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "header length {n} is above the format's limit of {MAX_HEADER_BYTES} bytes"
        ));
    }
    if n > file_len - 8 {
        return Err(format!(
            "header length {n} runs past the end of the file ({file_len} bytes)"
        ));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    String::from_utf8(header).map_err(|e| format!("the header is not UTF-8: {}", e.utf8_error()))
}

/// One tensor's header entry, its size checked against its shape and the data, or why not.
fn entry(
    name: String,
    value: Value,
    data_start: u64,
    data_len: u64,
) -> std::result::Result<TensorEntry, String> {
    let info: Info = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let len = info
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {:?} overflows", info.shape))?;
    let bits = len
        .checked_mul(info.dtype.bitsize())
        .filter(|b| b % 8 == 0)
        .ok_or_else(|| {
            format!(
                "shape {:?} of {:?} is not a whole number of bytes",
                info.shape, info.dtype
            )
        })?;
    let (begin, end) = info.data_offsets;
    if begin > end || end > data_len {
        return Err(format!(
            "data offsets [{begin}, {end}] are outside the {data_len} bytes of data"
        ));
    }
    if end - begin != (bits / 8) as u64 {
        return Err(format!(
            "shape {:?} of {:?} needs {} bytes, its offsets [{begin}, {end}] hold {}",
            info.shape,
            info.dtype,
            bits / 8,
            end - begin
        ));
    }
    Ok(TensorEntry {
        name,
        dtype: info.dtype,
        shape: info.shape,
        len,
        start: data_start + begin,
        bytes: (bits / 8) as usize,
    })
}

/// The tensors are packed from the start of the data, no gap, no overlap, ending at the end
/// of the file; or why not.
fn check_packed(
    entries: &[TensorEntry],
    data_start: u64,
    file_len: u64,
) -> std::result::Result<(), String> {
    let mut by_offset: Vec<&TensorEntry> = entries.iter().collect();
    by_offset.sort_by_key(|e| (e.start, e.bytes));
    let mut next = data_start;
    for e in by_offset {
        if e.start != next {
            return Err(format!(
                "tensor `{}` starts at data byte {}, the previous tensor ends at {}: \
                 tensors must be packed without gaps or overlaps",
                escape_controls(&e.name),
                e.start - data_start,
                next - data_start
            ));
        }
        next += e.bytes as u64;
    }
    if next != file_len {
        return Err(format!(
            "the tensors end at data byte {}, the file has {} bytes of data",
            next - data_start,
            file_len - data_start
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.safetensors");
        std::fs::write(&p, bytes).unwrap();
        (d, p)
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn error(bytes: &[u8]) -> String {
        let (_d, p) = file_of(bytes);
        TensorFile::open(&p).unwrap_err().to_string()
    }

    #[test]
    fn reads_what_the_safetensors_crate_writes() {
        let a: Vec<u8> = (0..16).collect();
        let b = vec![7u8; 6];
        let views = [
            (
                "a",
                safetensors::tensor::TensorView::new(Dtype::F32, vec![2, 2], &a).unwrap(),
            ),
            (
                "b",
                safetensors::tensor::TensorView::new(Dtype::U16, vec![3], &b).unwrap(),
            ),
        ];
        let info = std::collections::HashMap::from([("k".to_string(), "v".to_string())]);
        let (_d, p) = file_of(&safetensors::serialize(views, Some(info)).unwrap());
        let f = TensorFile::open(&p).unwrap();
        assert_eq!(f.entries().len(), 2);
        let a_entry = f.get("a").unwrap();
        assert_eq!((a_entry.len, a_entry.bytes), (4, 16));
        assert_eq!(f.read(a_entry).unwrap(), a);
        assert_eq!(f.read(f.get("b").unwrap()).unwrap(), b);
        assert_eq!(f.metadata().unwrap()["k"], "v");
    }

    #[test]
    fn our_header_is_read_back_by_the_safetensors_crate() {
        let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let mut bytes = safetensors_header(
            &[("x", Dtype::F32, &[2]), ("y", Dtype::U8, &[3])],
            Some(&meta),
        )
        .unwrap();
        assert_eq!(bytes.len() % 8, 0);
        bytes.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64, 1, 2, 3]);
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            st.tensor("x").unwrap().data(),
            &bytes[bytes.len() - 11..][..8]
        );
        assert_eq!(st.tensor("y").unwrap().data(), &[1, 2, 3]);
    }

    #[test]
    fn bad_headers_are_refused_naming_the_fault() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 2, 3], "too short"),
            (u64::MAX.to_le_bytes().to_vec(), "above the format's limit"),
            (with_header("{}", b"")[..9].to_vec(), "runs past the end"),
            (with_header("[1]", b""), "not a JSON object"),
            (with_header("{\"a\":1", b""), "header: EOF"),
            (
                with_header(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    &[0; 8],
                ),
                "duplicate key `a`",
            ),
            (
                with_header(
                    r#"{"w":{"dtype":"F32","shape":[9223372036854775809,2],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
                "tensor `w`: shape [9223372036854775809, 2] overflows",
            ),
            (
                with_header(
                    r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296,8],"data_offsets":[0,0]}}"#,
                    b"",
                ),
                "tensor `w`: shape",
            ),
            (
                with_header(
                    r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
                "tensor `w`: shape [2] of F32 needs 8 bytes",
            ),
            (
                with_header(
                    r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                    &[0; 9],
                ),
                "the tensors end at data byte 4, the file has 9",
            ),
            (
                with_header(
                    r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                    &[0; 8],
                ),
                "tensor `w` starts at data byte 4",
            ),
            (
                with_header(
                    r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}}"#,
                    &[0; 4],
                ),
                "tensor `w`: data offsets [0, 400] are outside",
            ),
            (
                with_header(
                    r#"{"w\r":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
                "tensor `w\\r`: unknown variant `Q9`",
            ),
        ];
        for (bytes, expected) in cases {
            let e = error(&bytes);
            assert!(e.contains(expected), "expected `{expected}` in: {e}");
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }
}

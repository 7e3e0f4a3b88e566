//! Reading what a user supplies, bounded (docs/robustness.md, the guide's page on bad input and limits): every file is
//! checked to be a regular file before it is opened (a FIFO would block the open, a character
//! device such as `/dev/zero` never ends), sizes are checked before anything is allocated, and
//! JSON objects may not repeat a key.
//!
//! - [`read_limited`]: a whole small file (a config), refused above its limit;
//! - [`TensorFile`]: a safetensors file read header first, each tensor's bytes only when asked
//!   for;
//! - [`json::parse_unique`]: JSON with duplicate keys refused, naming the key.

pub mod json;
mod tensor_file;

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

pub use tensor_file::{
    MAX_HEADER_BYTES, TensorEntry, TensorFile, safetensors_header, swap_little_endian,
};

use crate::error::{MoqError, Result};

/// The largest config file read: 1 MiB. A DeepSpeed config is a few KiB; anything near this is
/// not a config.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// What kind of file `meta` describes, for an error.
fn kind(meta: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading if it is a regular file (following symbolic links), and gives its
/// length. Anything else is refused before it is opened: opening a FIFO waits for a writer.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| MoqError::file(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(MoqError::file(
            path,
            format!("{}; only regular files are read", kind(&meta)),
        ));
    }
    let file = File::open(path).map_err(|e| MoqError::file(path, e.to_string()))?;
    // The path may have been replaced between the check and the open.
    let meta = file
        .metadata()
        .map_err(|e| MoqError::file(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(MoqError::file(
            path,
            format!("{}; only regular files are read", kind(&meta)),
        ));
    }
    Ok((file, meta.len()))
}

/// The whole of `path`, a regular file of at most `max` bytes (checked before reading, and
/// again while reading in case the file grows).
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path)?;
    let too_big = |len: u64| MoqError::file(path, format!("{len} bytes; at most {max} are read"));
    if len > max {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| MoqError::file(path, e.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn a_file_above_the_limit_is_refused_before_reading() {
        let d = dir();
        let p = d.path().join("big.json");
        std::fs::write(&p, vec![b' '; 101]).unwrap();
        let e = read_limited(&p, 100).unwrap_err().to_string();
        assert!(e.contains("101 bytes; at most 100"), "{e}");
        assert_eq!(read_limited(&p, 101).unwrap().len(), 101);
    }

    #[test]
    fn directories_and_devices_are_refused() {
        let d = dir();
        let e = read_limited(d.path(), 100).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        #[cfg(unix)]
        {
            let e = read_limited(Path::new("/dev/zero"), 100)
                .unwrap_err()
                .to_string();
            assert!(e.contains("a character device"), "{e}");
        }
    }
}

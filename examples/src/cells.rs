//! Finished runs kept as JSON files, a file each ("cells"), so that a long table (hours on 2
//! cores) picks up where an interrupted run stopped, and several processes can split it: one
//! folder per configuration (every argument that changes a result, hashed), one file per cell,
//! each written whole or not at all. A rerun with the same arguments skips the cells it finds;
//! `fresh` ignores them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The cells of one configuration: `<root>/<hash of the configuration>/<cell>.json`.
pub struct Cells {
    dir: PathBuf,
    fresh: bool,
}

impl Cells {
    /// The folder for `configuration` (written beside the cells as `configuration.txt`). With
    /// `fresh`, nothing is read back.
    pub fn new(root: &Path, configuration: &str, fresh: bool) -> Result<Self> {
        // FNV-1a, 64 bits: a stable name for the configuration.
        let hash = configuration
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        let dir = root.join(format!("{hash:016x}"));
        crate::write_file(&dir.join("configuration.txt"), configuration.as_bytes())?;
        Ok(Self { dir, fresh })
    }

    /// Where the cells are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The finished cell `name`, if any.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let path = self.dir.join(format!("{name}.json"));
        if self.fresh || !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let cell = serde_json::from_str(&text).with_context(|| {
            format!(
                "`{}` is not a result cell of this table (delete it to rerun)",
                path.display()
            )
        })?;
        Ok(Some(cell))
    }

    /// Records cell `name`, whole or not at all.
    pub fn put<T: Serialize>(&self, name: &str, cell: &T) -> Result<()> {
        crate::write_file(
            &self.dir.join(format!("{name}.json")),
            serde_json::to_string_pretty(cell)?.as_bytes(),
        )
    }
}

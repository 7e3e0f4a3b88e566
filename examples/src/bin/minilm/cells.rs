//! The finished fine-tunes of one `minilm fine-tune` configuration, a JSON file each, so that a
//! long run (the 3-seed table takes hours on 2 cores) picks up where an interrupted one stopped.
//! A cell is written only after its export was served and scored equal to the fake-quantized
//! model; a rerun with the same arguments skips it. `--fresh` ignores them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One fine-tune's result.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Cell {
    /// Test accuracy.
    pub accuracy: f64,
    /// The export's size (quantized variants).
    pub size: Option<Size>,
    /// Wall time of the fine-tune, seconds.
    pub seconds: f64,
}

/// What an export takes: the whole file, and the packed codes and scales of the encoder's
/// linear weights in it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
pub struct Size {
    /// Bytes of the file.
    pub file: u64,
    /// Bytes of the encoder's codes and scales.
    pub codes: u64,
}

/// The cells of one configuration: `target/results/minilm-cells/<hash of the configuration>/`.
pub struct Cells {
    dir: PathBuf,
    fresh: bool,
}

impl Cells {
    /// The folder for `configuration` (every argument that changes a result, as text; written
    /// beside the cells as `configuration.txt`). With `fresh`, nothing is read back.
    pub fn new(root: &Path, configuration: &str, fresh: bool) -> Result<Self> {
        // FNV-1a, 64 bits: a stable name for the configuration.
        let hash = configuration
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        let dir = root.join(format!("{hash:016x}"));
        moq_examples::write_file(&dir.join("configuration.txt"), configuration.as_bytes())?;
        Ok(Self { dir, fresh })
    }

    /// Where the cells are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The finished cell `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<Cell>> {
        let path = self.dir.join(format!("{name}.json"));
        if self.fresh || !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let cell = serde_json::from_str(&text).with_context(|| {
            format!(
                "`{}` is not a result cell (delete it to rerun)",
                path.display()
            )
        })?;
        Ok(Some(cell))
    }

    /// Records cell `name`, whole or not at all.
    pub fn put(&self, name: &str, cell: &Cell) -> Result<()> {
        moq_examples::write_file(
            &self.dir.join(format!("{name}.json")),
            serde_json::to_string_pretty(cell)?.as_bytes(),
        )
    }

    /// Where the full-precision model of `seed` is kept (PTQ rounds it).
    pub fn model_path(&self, seed: u64) -> PathBuf {
        self.dir.join(format!("fp32-seed{seed}"))
    }
}

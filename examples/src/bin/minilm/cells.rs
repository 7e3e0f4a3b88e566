//! What one finished `minilm fine-tune` keeps (a cell of [`moq_examples::Cells`]): a cell is
//! written only after its export was served and scored equal to the fake-quantized model.

use std::path::{Path, PathBuf};

use anyhow::Result;
use moq_burn::moq_core::export::MoqFile;
use moq_examples::Cells;
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

impl Size {
    /// The size of the export `file`, read from `path`.
    pub fn of(file: &MoqFile, path: &Path) -> Result<Self> {
        Ok(Self {
            file: std::fs::metadata(path)?.len(),
            codes: file
                .quantized
                .iter()
                .map(|e| e.packed.size_bytes() as u64)
                .sum(),
        })
    }
}

/// Where the full-precision model of `seed` is kept (PTQ rounds it).
pub fn model_path(cells: &Cells, seed: u64) -> PathBuf {
    cells.dir().join(format!("fp32-seed{seed}"))
}

//! all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, d_model 384) in burn: the encoder
//! ([`Bert`]), its pretrained weights ([`load_pretrained`]), its tokenizer ([`TextEncoder`]),
//! sentence embeddings as sentence-transformers computes them ([`Bert::embed`]), and the
//! fine-tuning task ([`spam`]).
//!
//! The model directory is what `scripts/fetch-minilm` unpacks: `config.json`,
//! `model.safetensors` and `tokenizer.json`.

mod classifier;
mod config;
mod load;
mod model;
pub mod spam;
mod tokenize;

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::backend::Backend;

pub use classifier::{Probe, TextClassifier, accuracy, labels, serve};
pub use config::BertConfig;
pub use load::load_pretrained;
pub use model::{Batch, Bert, mean_pool};
pub use tokenize::{Encoded, TextEncoder};

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2.
pub const EMBED_MAX_LEN: usize = 256;

/// Where `scripts/fetch-minilm` puts the model, relative to the repository root.
pub const DEFAULT_DIR: &str = "target/data/all-MiniLM-L6-v2";

/// The files of a model directory.
#[derive(Clone, Debug)]
pub struct ModelDir(pub PathBuf);

impl ModelDir {
    /// `dir`, or the default directory (under the repository root) when `None`.
    pub fn new(dir: Option<&Path>) -> Self {
        Self(dir.map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(DEFAULT_DIR)
            },
            Path::to_path_buf,
        ))
    }

    /// The encoder's config.
    pub fn config(&self) -> Result<BertConfig> {
        BertConfig::load(&self.0.join("config.json"))
    }

    /// The pretrained encoder.
    pub fn encoder<B: Backend>(&self, device: &B::Device) -> Result<Bert<B>> {
        let config = self.config()?;
        load_pretrained(
            Bert::new(&config, device),
            &self.0.join("model.safetensors"),
        )
    }

    /// The tokenizer, cutting sequences at `max_len` tokens.
    pub fn tokenizer(&self, max_len: usize) -> Result<TextEncoder> {
        TextEncoder::load(&self.0.join("tokenizer.json"), max_len)
    }
}

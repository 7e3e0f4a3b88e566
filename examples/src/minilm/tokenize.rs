//! Text to [`Batch`]es with Hugging Face's `tokenizers` on the model's `tokenizer.json`.

use std::path::Path;

use anyhow::{Result, anyhow};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::Batch;

/// A WordPiece tokenizer that truncates to `max_len` tokens (special tokens included) and pads
/// each batch to its longest sequence.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_len: usize,
}

/// The token ids and masks of a batch of texts, on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Sequences in the batch.
    pub rows: usize,
    /// Tokens per sequence (the longest, after truncation).
    pub len: usize,
    /// `rows × len` token ids, row-major.
    pub ids: Vec<u32>,
    /// `rows × len` attention mask (1 token, 0 padding).
    pub mask: Vec<u32>,
}

impl TextEncoder {
    /// Reads `tokenizer.json`; sequences longer than `max_len` tokens are cut.
    pub fn load(path: &Path, max_len: usize) -> Result<Self> {
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load the tokenizer `{}`: {e}", path.display()))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("truncation to {max_len} tokens: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        Ok(Self { tokenizer, max_len })
    }

    /// The longest sequence kept, in tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids and masks of `texts`, padded to the longest.
    pub fn encode(&self, texts: &[&str]) -> Result<Encoded> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow!("tokenization failed: {e}"))?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        Ok(Encoded {
            rows: texts.len(),
            len,
            ids,
            mask,
        })
    }
}

impl Encoded {
    /// Rows `rows` of this batch, as a batch of their own (same padded length).
    pub fn select(&self, rows: &[usize]) -> Encoded {
        let pick = |v: &[u32]| {
            rows.iter()
                .flat_map(|&r| v[r * self.len..(r + 1) * self.len].iter().copied())
                .collect()
        };
        Encoded {
            rows: rows.len(),
            len: self.len,
            ids: pick(&self.ids),
            mask: pick(&self.mask),
        }
    }

    /// Rows `rows` of this batch as tensors on `device`, cut to the longest of them.
    pub fn batch<B: Backend>(&self, rows: &[usize], device: &B::Device) -> Batch<B> {
        let len = rows
            .iter()
            .map(|&r| {
                self.mask[r * self.len..(r + 1) * self.len]
                    .iter()
                    .sum::<u32>() as usize
            })
            .max()
            .unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for &r in rows {
            let row = r * self.len..r * self.len + len;
            ids.extend(self.ids[row.clone()].iter().map(|&t| t as i64));
            mask.extend(self.mask[row].iter().map(|&m| m as f32));
        }
        let shape = [rows.len(), len];
        Batch {
            ids: Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), device),
            mask: Tensor::from_data(TensorData::new(mask, shape), device),
        }
    }
}

//! The Brown corpus as running text (`scripts/fetch-brown` puts it in `target/data/brown/`):
//! each document's `word/tag` tokens with the tags stripped, joined by spaces, one sentence a
//! line; characters outside printable ASCII become `?`. Split by document: every tenth
//! document (by its position in `cats.txt`, so every genre) is held out.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::Rng;

/// Characters the model knows: newline and printable ASCII (`' '..='~'`).
pub const VOCAB: usize = 96;

/// A batch of windows: the input characters `[batch, len]` and the next ones, the targets.
pub type Batch<B> = (Tensor<B, 2, Int>, Tensor<B, 2, Int>);

/// The train and held-out text as character ids.
pub struct Corpus {
    /// Training characters (90% of the documents).
    pub train: Vec<u8>,
    /// Held-out characters (every tenth document).
    pub test: Vec<u8>,
}

/// The id of a character: newline 0, `' '..='~'` 1..=95, anything else `?`.
pub fn char_id(c: char) -> u8 {
    match c {
        '\n' => 0,
        ' '..='~' => c as u8 - b' ' + 1,
        _ => b'?' - b' ' + 1,
    }
}

/// A document's running text: tags stripped, Brown's ``` `` ``` and `''` quotes as `"`.
pub fn running_text(tagged: &str) -> String {
    let mut out = String::with_capacity(tagged.len() / 2);
    for line in tagged.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|token| token.rsplit_once('/').map_or(token, |(word, _)| word))
            .map(|word| {
                if matches!(word, "``" | "''") {
                    "\""
                } else {
                    word
                }
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

impl Corpus {
    /// Reads the corpus from `dir` (with its `cats.txt`).
    pub fn load(dir: &Path) -> Result<Self> {
        let cats = dir.join("cats.txt");
        let list = std::fs::read_to_string(&cats).with_context(|| {
            format!(
                "cannot read `{}`: run scripts/fetch-brown first",
                cats.display()
            )
        })?;
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (i, line) in list.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let Some(doc) = line.split_whitespace().next() else {
                bail!("`{}` line {}: no document name", cats.display(), i + 1);
            };
            let path = dir.join(doc);
            let tagged = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            let text = running_text(&tagged);
            let ids = text.chars().map(char_id);
            if i % 10 == 9 {
                test.extend(ids);
            } else {
                train.extend(ids);
            }
        }
        if train.is_empty() || test.is_empty() {
            bail!("`{}` lists too few documents", cats.display());
        }
        Ok(Self { train, test })
    }

    /// A batch of `batch` training windows of `len + 1` characters at random starts drawn
    /// from `rng`: inputs (the first `len`) and targets (the last `len`).
    pub fn train_batch<B: Backend>(
        &self,
        rng: &mut Rng,
        batch: usize,
        len: usize,
        device: &B::Device,
    ) -> Batch<B> {
        let starts: Vec<usize> = (0..batch)
            .map(|_| rng.below(self.train.len() - len - 1))
            .collect();
        windows(&self.train, &starts, len, device)
    }

    /// The held-out windows: `count` windows of `len + 1` characters evenly spaced over the
    /// held-out text (the same for every run), in batches of `batch`.
    pub fn test_batches<B: Backend>(
        &self,
        count: usize,
        batch: usize,
        len: usize,
        device: &B::Device,
    ) -> Vec<Batch<B>> {
        let stride = (self.test.len() - len - 1) / count.max(1);
        let starts: Vec<usize> = (0..count).map(|i| i * stride).collect();
        starts
            .chunks(batch)
            .map(|chunk| windows(&self.test, chunk, len, device))
            .collect()
    }
}

fn windows<B: Backend>(text: &[u8], starts: &[usize], len: usize, device: &B::Device) -> Batch<B> {
    let pick = |offset: usize| -> Tensor<B, 2, Int> {
        let ids: Vec<i64> = starts
            .iter()
            .flat_map(|&s| {
                text[s + offset..s + offset + len]
                    .iter()
                    .map(|&c| i64::from(c))
            })
            .collect();
        Tensor::from_data(TensorData::new(ids, [starts.len(), len]), device)
    };
    (pick(0), pick(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_and_quotes_restored() {
        let text =
            running_text("\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n\n\tA/at b/nn\n");
        assert_eq!(text, "The jury said \" no \" .\nA b\n");
        assert_eq!(char_id('\n'), 0);
        assert_eq!(char_id(' '), 1);
        assert_eq!(char_id('~'), 95);
        assert_eq!(char_id('é'), char_id('?'));
    }
}

//! The Brown corpus' running text ([`crate::brown`]) as character ids: characters outside
//! printable ASCII become `?`; split by document as the corpus splits it.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::Rng;
use crate::brown::Brown;

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

impl Corpus {
    /// The characters of `brown`'s documents, split as it splits them.
    pub fn new(brown: &Brown) -> Self {
        let ids = |held_out: bool| -> Vec<u8> {
            brown
                .documents
                .iter()
                .filter(|d| d.held_out == held_out)
                .flat_map(|d| d.text.chars().map(char_id))
                .collect()
        };
        Self {
            train: ids(false),
            test: ids(true),
        }
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
    fn characters_have_their_ids() {
        assert_eq!(char_id('\n'), 0);
        assert_eq!(char_id(' '), 1);
        assert_eq!(char_id('~'), 95);
        assert_eq!(char_id('é'), char_id('?'));
    }
}

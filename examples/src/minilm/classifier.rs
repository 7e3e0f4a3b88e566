//! A text classifier: the pretrained encoder, mean pooling, dropout and a linear head (kept
//! in f32: classes × 384 weights), and its probe batch for the Hessian. The spam task has 2
//! classes ([`super::spam::CLASSES`]), the study's Brown genres 15.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use moq_burn::moq_core::export::MoqFile;
use moq_burn::moq_hessian::HessianLoss;
use moq_burn::{MoqBackend, Unservable, load_codes};

use super::{Batch, Bert, BertConfig, Encoded, mean_pool};

/// Encoder, pooling, head.
#[derive(Module, Debug)]
pub struct TextClassifier<B: Backend> {
    /// The encoder (module paths `bert.encoder.layer.{i}.…`).
    pub bert: Bert<B>,
    head: Linear<B>,
    dropout: Dropout,
}

impl<B: Backend> TextClassifier<B> {
    /// `bert` with a new head for `classes` classes (initialised from the backend's seed).
    pub fn new(bert: Bert<B>, config: &BertConfig, classes: usize, device: &B::Device) -> Self {
        Self {
            bert,
            head: LinearConfig::new(config.hidden_size, classes).init(device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
        }
    }

    /// The device its parameters are on.
    pub fn device(&self) -> B::Device {
        self.head.weight.device()
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, batch: &Batch<B>) -> Tensor<B, 2> {
        let pooled = mean_pool(self.bert.forward(batch), batch.mask.clone());
        self.head.forward(self.dropout.forward(pooled))
    }
}

/// The classifier of a MoQ export, for inference: the same type, every dense layer of the
/// encoder holding the exported codes (`moq_burn::load_codes`), every other parameter read from
/// the file. The head and embeddings are f32 in the file; a dense layer that cannot hold its
/// codes is an error.
pub fn serve<B: MoqBackend>(
    file: &MoqFile,
    config: &BertConfig,
    classes: usize,
    device: &B::Device,
) -> moq_burn::Result<TextClassifier<B>> {
    let mut model = TextClassifier::new(Bert::new(config, device), config, classes, device);
    load_codes(&mut model, file, Unservable::Refuse)?;
    Ok(model)
}

/// The share of `rows` of `encoded` that `forward` classifies as `labels` says, in batches of
/// 64.
pub fn accuracy<B: Backend>(
    forward: impl Fn(&Batch<B>) -> Tensor<B, 2>,
    encoded: &Encoded,
    labels: &[i64],
    device: &B::Device,
) -> f64 {
    let rows: Vec<usize> = (0..encoded.rows).collect();
    let mut correct = 0i64;
    for chunk in rows.chunks(64) {
        let predicted = forward(&encoded.batch(chunk, device))
            .argmax(1)
            .flatten::<1>(0, 1);
        let hits = predicted
            .equal(self::labels(labels, chunk, device))
            .int()
            .sum();
        correct += hits.into_scalar().elem::<i64>();
    }
    correct as f64 / encoded.rows.max(1) as f64
}

/// Labels of `rows` as a tensor.
pub fn labels<B: Backend>(labels: &[i64], rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let values: Vec<i64> = rows.iter().map(|&r| labels[r]).collect();
    Tensor::from_data(TensorData::new(values, [rows.len()]), device)
}

/// The cross-entropy of a classifier on a fixed batch: the loss whose Hessian the eigenvalue
/// variant measures.
pub struct Probe {
    config: BertConfig,
    classes: usize,
    encoded: Encoded,
    labels: Vec<i64>,
}

impl Probe {
    /// The probe batch: every row of `encoded`, labelled (of `classes` classes).
    pub fn new(config: BertConfig, classes: usize, encoded: Encoded, labels: Vec<i64>) -> Self {
        Self {
            config,
            classes,
            encoded,
            labels,
        }
    }
}

impl HessianLoss for Probe {
    type Model<B: Backend> = TextClassifier<B>;

    fn model<B: Backend>(&self, device: &B::Device) -> Self::Model<B> {
        TextClassifier::new(
            Bert::new(&self.config, device),
            &self.config,
            self.classes,
            device,
        )
    }

    fn loss<B: Backend>(&self, model: &Self::Model<B>) -> Tensor<B, 1> {
        let device = model.head.weight.device();
        let rows: Vec<usize> = (0..self.encoded.rows).collect();
        let batch = self.encoded.batch(&rows, &device);
        CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.forward(&batch), labels(&self.labels, &rows, &device))
    }
}

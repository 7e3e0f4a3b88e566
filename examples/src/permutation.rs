//! The permutation task and its transformer classifier, shared by the `transformer` example and
//! the `overhead` benchmark: is the second half of a token sequence a permutation of the first
//! half? Answering needs attention, since every token must be compared with the other half.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use moq_burn::moq_core::export::{Exported, MoqFile};
use moq_burn::moq_hessian::HessianLoss;
use moq_burn::{MoqBackend, QuantizedLinear, load_dequantized};

use crate::Rng;

/// Token vocabulary.
pub const VOCAB: usize = 6;
/// Tokens per half.
pub const HALF: usize = 4;
/// Sequence length.
pub const LEN: usize = 2 * HALF;
/// Model width.
pub const D_MODEL: usize = 32;
/// Encoder layers.
pub const LAYERS: usize = 2;
/// Attention heads.
pub const HEADS: usize = 4;
/// Batch size.
pub const BATCH: usize = 64;
/// Adam learning rate.
pub const LR: f64 = 2e-3;
/// Training sequences.
pub const TRAIN: usize = 8192;
/// Test sequences.
pub const TEST: usize = 2048;

/// Token sequences and labels (1: the second half is a permutation of the first).
pub struct Task {
    tokens: Vec<i64>,
    labels: Vec<i64>,
}

impl Task {
    /// `n` balanced examples from `seed`; a negative differs from a permutation in exactly one
    /// token.
    pub fn generate(n: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let (mut tokens, mut labels) = (Vec::with_capacity(n * LEN), Vec::with_capacity(n));
        for i in 0..n {
            let first: Vec<i64> = (0..HALF).map(|_| rng.below(VOCAB) as i64).collect();
            let mut second = first.clone();
            rng.shuffle(&mut second);
            let positive = i % 2 == 0;
            if !positive {
                let at = rng.below(HALF);
                second[at] = ((second[at] as usize + 1 + rng.below(VOCAB - 1)) % VOCAB) as i64;
            }
            tokens.extend(first);
            tokens.extend(second);
            labels.push(i64::from(positive));
        }
        Self { tokens, labels }
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Tokens `[rows, LEN]` and labels `[rows]` of the given rows.
    pub fn tensors<B: Backend>(
        &self,
        rows: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>) {
        let t: Vec<i64> = rows
            .iter()
            .flat_map(|&r| self.tokens[r * LEN..(r + 1) * LEN].iter().copied())
            .collect();
        let y: Vec<i64> = rows.iter().map(|&r| self.labels[r]).collect();
        (
            Tensor::from_data(TensorData::new(t, [rows.len(), LEN]), device),
            Tensor::from_data(TensorData::new(y, [rows.len()]), device),
        )
    }
}

/// Token and position embeddings, a transformer encoder, mean pooling and a linear head.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    token: Embedding<B>,
    position: Embedding<B>,
    encoder: TransformerEncoder<B>,
    head: Linear<B>,
}

impl<B: Backend> Classifier<B> {
    /// A fresh classifier, initialized from the backend's (seeded) generator.
    pub fn new(device: &B::Device) -> Self {
        Self {
            token: EmbeddingConfig::new(VOCAB, D_MODEL).init(device),
            position: EmbeddingConfig::new(LEN, D_MODEL).init(device),
            encoder: TransformerEncoderConfig::new(D_MODEL, 2 * D_MODEL, HEADS, LAYERS)
                .with_dropout(0.0)
                .init(device),
            head: LinearConfig::new(D_MODEL, 2).init(device),
        }
    }

    /// Logits `[batch, 2]` for token sequences `[batch, LEN]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [batch, len] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, batch);
        let x = self.token.forward(tokens) + self.position.forward(positions);
        let x = self.encoder.forward(TransformerEncoderInput::new(x));
        self.head.forward(x.mean_dim(1).squeeze_dim::<2>(1))
    }
}

/// The classifier for inference from a MoQ export: the same computation as [`Classifier`] (burn's
/// post-norm encoder layer, step for step), with every linear layer a [`QuantizedLinear`]
/// holding its packed codes. Embeddings and layer norms hold the export's values (embeddings are
/// looked up, not multiplied, so they are dequantized once at load).
#[derive(Module, Debug)]
pub struct QuantizedClassifier<B: Backend> {
    token: Embedding<B>,
    position: Embedding<B>,
    layers: Vec<QuantizedEncoderLayer<B>>,
    head: QuantizedLinear<B>,
}

/// One encoder layer of [`QuantizedClassifier`].
#[derive(Module, Debug)]
struct QuantizedEncoderLayer<B: Backend> {
    query: QuantizedLinear<B>,
    key: QuantizedLinear<B>,
    value: QuantizedLinear<B>,
    output: QuantizedLinear<B>,
    inner: QuantizedLinear<B>,
    outer: QuantizedLinear<B>,
    norm_1: LayerNorm<B>,
    norm_2: LayerNorm<B>,
    gelu: Gelu,
}

/// The tensors of `file` under `prefix.`, with the prefix removed.
fn subtree(file: &MoqFile, prefix: &str) -> MoqFile {
    let strip = |name: &str| name.strip_prefix(&format!("{prefix}.")).map(str::to_string);
    MoqFile {
        quantized: file
            .quantized
            .iter()
            .filter_map(|e| strip(&e.name).map(|name| Exported { name, ..e.clone() }))
            .collect(),
        float: file
            .float
            .iter()
            .filter_map(|(n, shape, v)| strip(n).map(|name| (name, shape.clone(), v.clone())))
            .collect(),
    }
}

impl<B: MoqBackend> QuantizedClassifier<B> {
    /// The classifier of an export of a trained [`Classifier`].
    pub fn load(file: &MoqFile, device: &B::Device) -> moq_burn::Result<Self> {
        let embedding = |name: &str, rows: usize| {
            load_dequantized(
                EmbeddingConfig::new(rows, D_MODEL).init(device),
                &subtree(file, name),
            )
        };
        let norm = |name: &str| {
            load_dequantized(
                LayerNormConfig::new(D_MODEL).init(device),
                &subtree(file, name),
            )
        };
        let linear = |name: &str| QuantizedLinear::load(file, name, device);
        let layers = (0..LAYERS)
            .map(|i| {
                let at = |part: &str| format!("encoder.layers.{i}.{part}");
                Ok(QuantizedEncoderLayer {
                    query: linear(&at("mha.query"))?,
                    key: linear(&at("mha.key"))?,
                    value: linear(&at("mha.value"))?,
                    output: linear(&at("mha.output"))?,
                    inner: linear(&at("pwff.linear_inner"))?,
                    outer: linear(&at("pwff.linear_outer"))?,
                    norm_1: norm(&at("norm_1"))?,
                    norm_2: norm(&at("norm_2"))?,
                    gelu: Gelu::new(),
                })
            })
            .collect::<moq_burn::Result<Vec<_>>>()?;
        Ok(Self {
            token: embedding("token", VOCAB)?,
            position: embedding("position", LEN)?,
            layers,
            head: linear("head")?,
        })
    }

    /// Logits `[batch, 2]` for token sequences `[batch, LEN]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let [batch, len] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, batch);
        let mut x = self.token.forward(tokens) + self.position.forward(positions);
        for layer in &self.layers {
            x = layer.forward(x);
        }
        self.head.forward(x.mean_dim(1).squeeze_dim::<2>(1))
    }
}

impl<B: MoqBackend> QuantizedEncoderLayer<B> {
    /// burn's `TransformerEncoderLayer::forward` (post-norm, no dropout, no masks).
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, len, d_model] = x.dims();
        let d_k = d_model / HEADS;
        let heads = |linear: &QuantizedLinear<B>, x: Tensor<B, 3>| {
            linear
                .forward(x)
                .reshape([batch, len, HEADS, d_k])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (
            heads(&self.query, x.clone()),
            heads(&self.key, x.clone()),
            heads(&self.value, x.clone()),
        );
        let scores = q.matmul(k.transpose()).div_scalar((d_k as f32).sqrt());
        let weights = softmax(scores, 3);
        let context = weights
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, len, d_model]);
        let x = self.norm_1.forward(x + self.output.forward(context));
        let ffn = self
            .outer
            .forward(self.gelu.forward(self.inner.forward(x.clone())));
        self.norm_2.forward(x + ffn)
    }
}

/// Accuracy of `model` on `data`.
pub fn accuracy<B: Backend>(model: &Classifier<B>, data: &Task, device: &B::Device) -> f64 {
    accuracy_of(|x| model.forward(x), data, device)
}

/// Accuracy of the model computing `forward` on `data`.
pub fn accuracy_of<B: Backend>(
    forward: impl Fn(Tensor<B, 2, Int>) -> Tensor<B, 2>,
    data: &Task,
    device: &B::Device,
) -> f64 {
    let rows: Vec<usize> = (0..data.len()).collect();
    let (x, y) = data.tensors::<B>(&rows, device);
    let predicted = forward(x).argmax(1).squeeze_dim::<1>(1);
    let correct: i64 = predicted.equal(y).int().sum().into_scalar().elem();
    correct as f64 / data.len() as f64
}

/// The training loss on a fixed probe batch: what the Hessian eigenvalues are taken of.
pub struct Probe {
    tokens: TensorData,
    labels: TensorData,
}

impl Probe {
    /// The batch of `rows` of `task`.
    pub fn new(task: &Task, rows: &[usize]) -> Self {
        let (tokens, labels) = task.tensors::<burn::backend::NdArray>(rows, &Default::default());
        Self {
            tokens: tokens.into_data(),
            labels: labels.into_data(),
        }
    }
}

impl HessianLoss for Probe {
    type Model<B: Backend> = Classifier<B>;

    fn model<B: Backend>(&self, device: &B::Device) -> Classifier<B> {
        Classifier::new(device)
    }

    fn loss<B: Backend>(&self, model: &Classifier<B>) -> Tensor<B, 1> {
        let device = model.head.weight.device();
        let tokens = Tensor::<B, 2, Int>::from_data(self.tokens.clone(), &device);
        let labels = Tensor::<B, 1, Int>::from_data(self.labels.clone(), &device);
        CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.forward(tokens), labels)
    }
}

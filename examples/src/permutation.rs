//! The permutation task and its transformer classifier, shared by the `transformer` example and
//! the `overhead` benchmark: is the second half of a token sequence a permutation of the first
//! half? Answering needs attention, since every token must be compared with the other half.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{Embedding, EmbeddingConfig, Gelu, LayerNorm, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use moq_burn::moq_core::export::MoqFile;
use moq_burn::moq_hessian::HessianLoss;
use moq_burn::{Held, MoqBackend, MoqLinear, Unservable, load_codes};

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

/// Token and position embeddings, a transformer encoder, mean pooling and a linear head. Every
/// linear layer is a [`MoqLinear`]: it trains as burn's `Linear` and, once [`load_codes`] has
/// put an export in, multiplies with the packed codes. The encoder is burn's post-norm
/// `TransformerEncoder`, initialised by burn and computed step for step as burn computes it
/// (test `the_encoder_computes_what_burns_computes`), with the same module paths
/// (`encoder.layers.0.mha.query.weight`).
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    token: Embedding<B>,
    position: Embedding<B>,
    encoder: Encoder<B>,
    head: MoqLinear<B>,
}

/// burn's `TransformerEncoder` (post-norm, no dropout, no masks) with `MoqLinear` layers.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    layers: Vec<EncoderLayer<B>>,
}

/// One encoder layer: self-attention and the feed-forward block, each added and normalised.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    mha: Attention<B>,
    pwff: FeedForward<B>,
    norm_1: LayerNorm<B>,
    norm_2: LayerNorm<B>,
    gelu: Gelu,
}

/// Multi-head self-attention's projections.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    query: MoqLinear<B>,
    key: MoqLinear<B>,
    value: MoqLinear<B>,
    output: MoqLinear<B>,
}

/// The position-wise feed-forward block.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    linear_inner: MoqLinear<B>,
    linear_outer: MoqLinear<B>,
}

impl<B: Backend> Encoder<B> {
    /// burn's encoder, its layers moved into ours (the same parameters, initialised by burn).
    fn from_burn(encoder: TransformerEncoder<B>) -> Self {
        let layers = encoder
            .layers
            .into_iter()
            .map(|l| EncoderLayer {
                mha: Attention {
                    query: l.mha.query.into(),
                    key: l.mha.key.into(),
                    value: l.mha.value.into(),
                    output: l.mha.output.into(),
                },
                pwff: FeedForward {
                    linear_inner: l.pwff.linear_inner.into(),
                    linear_outer: l.pwff.linear_outer.into(),
                },
                norm_1: l.norm_1,
                norm_2: l.norm_2,
                gelu: Gelu::new(),
            })
            .collect();
        Self { layers }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layers.iter().fold(x, |x, layer| layer.forward(x))
    }
}

impl<B: Backend> EncoderLayer<B> {
    /// burn's `TransformerEncoderLayer::forward` (post-norm, no dropout, no masks).
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, len, d_model] = x.dims();
        let d_k = d_model / HEADS;
        let heads = |linear: &MoqLinear<B>, x: Tensor<B, 3>| {
            linear
                .forward(x)
                .reshape([batch, len, HEADS, d_k])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (
            heads(&self.mha.query, x.clone()),
            heads(&self.mha.key, x.clone()),
            heads(&self.mha.value, x.clone()),
        );
        let scores = q.matmul(k.transpose()).div_scalar((d_k as f32).sqrt());
        let weights = softmax(scores, 3);
        let context = weights
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, len, d_model]);
        let x = self.norm_1.forward(x + self.mha.output.forward(context));
        let ffn = self
            .pwff
            .linear_outer
            .forward(self.gelu.forward(self.pwff.linear_inner.forward(x.clone())));
        self.norm_2.forward(x + ffn)
    }
}

fn burn_encoder<B: Backend>(device: &B::Device) -> TransformerEncoder<B> {
    TransformerEncoderConfig::new(D_MODEL, 2 * D_MODEL, HEADS, LAYERS)
        .with_dropout(0.0)
        .init(device)
}

impl<B: Backend> Classifier<B> {
    /// A fresh classifier, initialized from the backend's (seeded) generator.
    pub fn new(device: &B::Device) -> Self {
        Self {
            token: EmbeddingConfig::new(VOCAB, D_MODEL).init(device),
            position: EmbeddingConfig::new(LEN, D_MODEL).init(device),
            encoder: Encoder::from_burn(burn_encoder(device)),
            head: MoqLinear::new(&LinearConfig::new(D_MODEL, 2), device),
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
        let x = self.encoder.forward(x);
        self.head.forward(x.mean_dim(1).squeeze_dim::<2>(1))
    }
}

impl<B: MoqBackend> Classifier<B> {
    /// The classifier of an export of a trained classifier, every linear layer holding its
    /// packed codes, the rest read from the file: the embeddings are looked up, not multiplied,
    /// so theirs are dequantized once here. A linear layer that cannot hold its codes (a width
    /// without a kernel) is an error.
    pub fn load(file: &MoqFile, device: &B::Device) -> moq_burn::Result<Self> {
        let mut model = Self::new(device);
        let report = load_codes(&mut model, file, Unservable::Dequantize)?;
        for t in &report.tensors {
            if let Held::Dequantized { reason } = &t.held
                && !matches!(t.name.as_str(), "token.weight" | "position.weight")
            {
                return Err(moq_burn::MoqBurnError::Export {
                    reason: format!("`{}` is not served from its codes: {reason}", t.name),
                });
            }
        }
        Ok(model)
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

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::nn::transformer::TransformerEncoderInput;

    use super::*;

    #[test]
    fn the_encoder_computes_what_burns_computes() {
        let device = Default::default();
        let burn = burn_encoder::<NdArray>(&device);
        let x: Vec<f32> = (0..3 * LEN * D_MODEL)
            .map(|i| (i as f32 * 0.31).sin())
            .collect();
        let x = Tensor::<NdArray, 3>::from_data(TensorData::new(x, [3, LEN, D_MODEL]), &device);
        // burn initialises parameters lazily: run it first, so the clone holds the same values.
        let expected = burn.forward(TransformerEncoderInput::new(x.clone()));
        let ours = Encoder::from_burn(burn.clone());
        assert_eq!(
            ours.forward(x).into_data().to_vec::<f32>().unwrap(),
            expected.into_data().to_vec::<f32>().unwrap()
        );
    }
}

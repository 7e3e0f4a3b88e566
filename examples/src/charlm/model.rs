//! A GPT-style decoder over characters: token and position embeddings, pre-norm blocks of
//! causal multi-head attention and a GELU feed-forward, a final norm and a linear head. Its
//! linear layers are [`MoqLinear`]s, so the same model serves exported codes.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, ElementConversion, Int, Tensor, TensorData};
use moq_burn::MoqLinear;
use moq_burn::moq_hessian::HessianLoss;

use super::VOCAB;
use super::corpus::Batch;

/// The model's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LmConfig {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Decoder blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Characters of context.
    pub context: usize,
}

impl LmConfig {
    /// Parameters in the blocks' linear weights (what MoQ quantizes).
    pub fn quantized_params(&self) -> usize {
        self.layers * 12 * self.d_model * self.d_model
    }
}

/// The language model.
#[derive(Module, Debug)]
pub struct CharLm<B: Backend> {
    token: Embedding<B>,
    position: Embedding<B>,
    /// The decoder blocks (`blocks.{i}`: one MoQ layer each).
    pub blocks: Vec<Block<B>>,
    norm: LayerNorm<B>,
    head: MoqLinear<B>,
    heads: usize,
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    norm_1: LayerNorm<B>,
    query: MoqLinear<B>,
    key: MoqLinear<B>,
    value: MoqLinear<B>,
    output: MoqLinear<B>,
    norm_2: LayerNorm<B>,
    inner: MoqLinear<B>,
    outer: MoqLinear<B>,
    gelu: Gelu,
}

impl<B: Backend> Block<B> {
    fn new(d: usize, device: &B::Device) -> Self {
        let linear = |i, o| MoqLinear::new(&LinearConfig::new(i, o), device);
        Self {
            norm_1: LayerNormConfig::new(d).init(device),
            query: linear(d, d),
            key: linear(d, d),
            value: linear(d, d),
            output: linear(d, d),
            norm_2: LayerNormConfig::new(d).init(device),
            inner: linear(d, 4 * d),
            outer: linear(4 * d, d),
            gelu: Gelu::new(),
        }
    }

    fn forward(&self, x: Tensor<B, 3>, heads: usize, mask: &Tensor<B, 4, Bool>) -> Tensor<B, 3> {
        let [batch, len, d] = x.dims();
        let d_k = d / heads;
        let h = self.norm_1.forward(x.clone());
        let split = |linear: &MoqLinear<B>| {
            linear
                .forward(h.clone())
                .reshape([batch, len, heads, d_k])
                .swap_dims(1, 2)
        };
        let (q, k, v) = (split(&self.query), split(&self.key), split(&self.value));
        let scores = q
            .matmul(k.transpose())
            .div_scalar((d_k as f32).sqrt())
            .mask_fill(mask.clone(), -1e9);
        let context = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, len, d]);
        let x = x + self.output.forward(context);
        let h = self.norm_2.forward(x.clone());
        x.clone() + self.outer.forward(self.gelu.forward(self.inner.forward(h)))
    }
}

impl<B: Backend> CharLm<B> {
    /// A freshly initialised model (burn's default initialisers, from the backend's seed).
    pub fn new(config: &LmConfig, device: &B::Device) -> Self {
        let d = config.d_model;
        Self {
            token: EmbeddingConfig::new(VOCAB, d).init(device),
            position: EmbeddingConfig::new(config.context, d).init(device),
            blocks: (0..config.layers).map(|_| Block::new(d, device)).collect(),
            norm: LayerNormConfig::new(d).init(device),
            head: MoqLinear::new(&LinearConfig::new(d, VOCAB), device),
            heads: config.heads,
        }
    }

    /// Logits `[batch, len, VOCAB]` of the next character at every position of `tokens`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [batch, len] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, batch);
        // True above the diagonal: a position sees itself and the ones before it.
        let mask = Tensor::<B, 2, Bool>::tril_mask([len, len], 0, &device).unsqueeze::<4>();
        let x = self.token.forward(tokens) + self.position.forward(positions);
        let x = self
            .blocks
            .iter()
            .fold(x, |x, block| block.forward(x, self.heads, &mask));
        self.head.forward(self.norm.forward(x))
    }

    /// Mean cross-entropy (nats per character) of predicting `targets` from `tokens`.
    pub fn loss(&self, tokens: Tensor<B, 2, Int>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [batch, len] = targets.dims();
        let logits = self.forward(tokens).reshape([batch * len, VOCAB]);
        CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits, targets.reshape([batch * len]))
    }
}

/// Bits per character of `model` on `batches` (the held-out windows), averaged over every
/// predicted character.
pub fn bits_per_char<B: Backend>(model: &CharLm<B>, batches: &[Batch<B>]) -> f64 {
    let nats: f64 = batches
        .iter()
        .map(|(x, y)| model.loss(x.clone(), y.clone()).into_scalar().elem::<f64>())
        .sum();
    nats / batches.len() as f64 / std::f64::consts::LN_2
}

/// The training loss on a fixed batch: what the Hessian eigenvalues are taken of.
pub struct Probe {
    config: LmConfig,
    tokens: TensorData,
    targets: TensorData,
}

impl Probe {
    /// The probe batch `(tokens, targets)`, as host data.
    pub fn new<B: Backend>(config: LmConfig, batch: Batch<B>) -> Self {
        Self {
            config,
            tokens: batch.0.into_data(),
            targets: batch.1.into_data(),
        }
    }
}

impl HessianLoss for Probe {
    type Model<B: Backend> = CharLm<B>;

    fn model<B: Backend>(&self, device: &B::Device) -> CharLm<B> {
        CharLm::new(&self.config, device)
    }

    fn loss<B: Backend>(&self, model: &CharLm<B>) -> Tensor<B, 1> {
        let device = model.token.weight.device();
        model.loss(
            Tensor::from_data(self.tokens.clone(), &device),
            Tensor::from_data(self.targets.clone(), &device),
        )
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;

    #[test]
    fn a_position_sees_only_itself_and_the_ones_before() {
        let device = Default::default();
        let config = LmConfig {
            d_model: 16,
            layers: 2,
            heads: 2,
            context: 8,
        };
        let model = CharLm::<NdArray>::new(&config, &device);
        let tokens = |last: i64| {
            Tensor::<NdArray, 2, Int>::from_data(
                TensorData::new(vec![5, 9, 12, 3, 40, 7, 22, last], [1, 8]),
                &device,
            )
        };
        let a = model
            .forward(tokens(1))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let b = model
            .forward(tokens(80))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // The first 7 positions' logits do not depend on the 8th character; the 8th's do.
        let known = 7 * VOCAB;
        assert_eq!(a[..known], b[..known]);
        assert_ne!(a[known..], b[known..]);
    }
}

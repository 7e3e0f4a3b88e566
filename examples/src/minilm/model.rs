//! The BERT encoder (Hugging Face's `BertModel`, post-norm, absolute positions) and
//! sentence-transformers' pooling. Its dense layers are `MoqLinear`: burn's `Linear` to load and
//! fine-tune, the exported codes once `moq_burn::load_codes` has served an export into it.
//!
//! Field names follow the Hugging Face checkpoint, so module paths read like its tensor names
//! (`encoder.layer.3.attention.query.weight` for `encoder.layer.3.attention.self.query.weight`;
//! [`super::load`] lists the renames).

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, LinearConfig,
};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use moq_burn::MoqLinear;

use super::BertConfig;

/// A tokenized batch: token ids and the attention mask (1 for a token, 0 for padding), both
/// `[batch, len]`.
#[derive(Clone, Debug)]
pub struct Batch<B: Backend> {
    /// Token ids.
    pub ids: Tensor<B, 2, Int>,
    /// 1.0 where `ids` holds a token, 0.0 where it is padding.
    pub mask: Tensor<B, 2>,
}

/// Token, position and token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    word_embeddings: Embedding<B>,
    position_embeddings: Embedding<B>,
    token_type_embeddings: Embedding<B>,
    layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

/// A dense layer, dropout, then the residual sum normalised: BERT's `*Output` blocks.
#[derive(Module, Debug)]
pub struct DenseNorm<B: Backend> {
    dense: MoqLinear<B>,
    layer_norm: LayerNorm<B>,
    dropout: Dropout,
}

/// Multi-head self-attention and its output block.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    query: MoqLinear<B>,
    key: MoqLinear<B>,
    value: MoqLinear<B>,
    output: DenseNorm<B>,
    heads: usize,
}

/// One encoder layer: attention, then the feed-forward block (`intermediate`, GELU, `output`).
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    attention: Attention<B>,
    intermediate: MoqLinear<B>,
    output: DenseNorm<B>,
}

/// The encoder stack.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    layer: Vec<Layer<B>>,
}

/// The BERT encoder.
#[derive(Module, Debug)]
pub struct Bert<B: Backend> {
    embeddings: Embeddings<B>,
    encoder: Encoder<B>,
}

impl<B: Backend> Bert<B> {
    /// A randomly initialised encoder of `config`'s shape (load the pretrained weights with
    /// [`super::load_pretrained`]).
    pub fn new(config: &BertConfig, device: &B::Device) -> Self {
        let d = config.hidden_size;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        let dropout = || DropoutConfig::new(config.hidden_dropout_prob).init();
        let linear = |i: usize, o: usize| MoqLinear::new(&LinearConfig::new(i, o), device);
        let dense_norm = |i: usize| DenseNorm {
            dense: linear(i, d),
            layer_norm: norm(),
            dropout: dropout(),
        };
        let layer = (0..config.num_hidden_layers)
            .map(|_| Layer {
                attention: Attention {
                    query: linear(d, d),
                    key: linear(d, d),
                    value: linear(d, d),
                    output: dense_norm(d),
                    heads: config.num_attention_heads,
                },
                intermediate: linear(d, config.intermediate_size),
                output: dense_norm(config.intermediate_size),
            })
            .collect();
        let embedding = |rows: usize| EmbeddingConfig::new(rows, d).init(device);
        Self {
            embeddings: Embeddings {
                word_embeddings: embedding(config.vocab_size),
                position_embeddings: embedding(config.max_position_embeddings),
                token_type_embeddings: embedding(config.type_vocab_size),
                layer_norm: norm(),
                dropout: dropout(),
            },
            encoder: Encoder { layer },
        }
    }
}

impl<B: Backend> Bert<B> {
    /// Hidden states of the last layer, `[batch, len, d]`.
    pub fn forward(&self, batch: &Batch<B>) -> Tensor<B, 3> {
        let [n, len] = batch.ids.dims();
        let device = batch.ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, n);
        let types = Tensor::<B, 2, Int>::zeros([n, len], &device);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(batch.ids.clone())
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let mut x = e.dropout.forward(e.layer_norm.forward(x));
        // 0 on tokens, -10⁴ on padding, added to every attention score (f16-safe).
        let bias = (batch.mask.clone() - 1.0)
            .mul_scalar(1e4)
            .reshape([n, 1, 1, len]);
        for layer in &self.encoder.layer {
            x = layer.forward(x, bias.clone());
        }
        x
    }

    /// sentence-transformers' embedding: the mean of the hidden states under the mask, L2
    /// normalised, `[batch, d]`.
    pub fn embed(&self, batch: &Batch<B>) -> Tensor<B, 2> {
        let pooled = mean_pool(self.forward(batch), batch.mask.clone());
        let norm = pooled
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        pooled / norm
    }
}

/// The mean over `len` of `hidden` (`[batch, len, d]`) where `mask` (`[batch, len]`) is 1.
pub fn mean_pool<B: Backend>(hidden: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
    let [n, len, _] = hidden.dims();
    let mask = mask.reshape([n, len, 1]);
    let sum = (hidden * mask.clone()).sum_dim(1).squeeze_dim::<2>(1);
    let count = mask.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1e-9);
    sum / count
}

impl<B: Backend> Layer<B> {
    fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self.attention.forward(x, bias);
        let inner = gelu(self.intermediate.forward(x.clone()));
        self.output.forward(inner, x)
    }
}

impl<B: Backend> DenseNorm<B> {
    fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        let y = self.dropout.forward(self.dense.forward(x));
        self.layer_norm.forward(y + residual)
    }
}

impl<B: Backend> Attention<B> {
    fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let [n, len, d] = x.dims();
        let d_head = d / self.heads;
        let split = |t: Tensor<B, 3>| t.reshape([n, len, self.heads, d_head]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .div_scalar((d_head as f64).sqrt())
            + bias;
        let context = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([n, len, d]);
        self.output.forward(context, x)
    }
}

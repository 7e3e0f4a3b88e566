//! The encoder's hyperparameters, read from the model's `config.json` (Hugging Face's
//! `BertConfig`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// What the BERT encoder needs of `config.json`; other keys are ignored.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct BertConfig {
    /// Rows of the token embedding.
    pub vocab_size: usize,
    /// Width of every hidden state (`d_model`).
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Rows of the position embedding: the longest sequence.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding.
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    pub layer_norm_eps: f64,
    /// The feed-forward activation; only `gelu` (the exact, erf-based one) is implemented.
    pub hidden_act: String,
    /// Dropout on hidden states while training.
    #[serde(default)]
    pub hidden_dropout_prob: f64,
}

impl BertConfig {
    /// Weights in the encoder's linear layers: per layer the attention's four `d × d` and the
    /// feed-forward's two `d × intermediate`.
    pub fn linear_weights(&self) -> usize {
        let (d, inner) = (self.hidden_size, self.intermediate_size);
        self.num_hidden_layers * (4 * d * d + 2 * d * inner)
    }

    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        let config: BertConfig = serde_json::from_str(&text)
            .with_context(|| format!("`{}` is not a BERT config.json", path.display()))?;
        config
            .check()
            .with_context(|| format!("in `{}`", path.display()))?;
        Ok(config)
    }

    /// The checks a forward pass relies on.
    pub fn check(&self) -> Result<()> {
        if self.hidden_act != "gelu" {
            bail!(
                "hidden_act `{}` is not implemented (only `gelu`)",
                self.hidden_act
            );
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            bail!("{name} is 0");
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        let eps_ok = self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0;
        if !eps_ok || !(0.0..1.0).contains(&self.hidden_dropout_prob) {
            bail!(
                "layer_norm_eps {} must be > 0 and hidden_dropout_prob {} in [0, 1)",
                self.layer_norm_eps,
                self.hidden_dropout_prob
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> BertConfig {
        serde_json::from_str(
            r#"{"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
                "num_attention_heads": 12, "intermediate_size": 1536,
                "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
                "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "model_type": "bert"}"#,
        )
        .unwrap()
    }

    #[test]
    fn configs_the_encoder_cannot_run_are_refused_by_name() {
        assert!(minilm().check().is_ok());
        let refused = |edit: fn(&mut BertConfig), needle: &str| {
            let mut c = minilm();
            edit(&mut c);
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        };
        refused(|c| c.hidden_act = "relu".into(), "hidden_act `relu`");
        refused(
            |c| c.num_attention_heads = 5,
            "not a multiple of num_attention_heads 5",
        );
        refused(|c| c.num_hidden_layers = 0, "num_hidden_layers is 0");
        refused(|c| c.layer_norm_eps = f64::NAN, "layer_norm_eps");
        refused(|c| c.hidden_dropout_prob = 1.0, "hidden_dropout_prob 1");
    }
}

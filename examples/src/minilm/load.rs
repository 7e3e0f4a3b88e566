//! The pretrained weights: a Hugging Face BERT `model.safetensors` loaded with burn-store.
//!
//! burn-store's `PyTorchToBurnAdapter` transposes linear weights (PyTorch keeps
//! `[out, in]`, burn `[in, out]`); four renames map the Hugging Face names to [`Bert`]'s module
//! paths (the layer norms' are explicit, so that burn-store's report of unused tensors is
//! exact):
//!
//! | Hugging Face | here |
//! | --- | --- |
//! | `….LayerNorm.weight` | `….layer_norm.gamma` |
//! | `….LayerNorm.bias` | `….layer_norm.beta` |
//! | `….attention.self.{query,key,value}.…` | `….attention.{query,key,value}.…` |
//! | `….intermediate.dense.…` | `….intermediate.…` |
//!
//! `embeddings.position_ids` (a buffer, not a parameter) and BERT's pooler (`pooler.dense`,
//! which sentence-transformers does not use) are left unused; anything else unused, any
//! parameter missing and any shape that differs is an error.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

use super::Bert;

/// Tensors of a Hugging Face BERT checkpoint that sentence embeddings do not use.
const NOT_USED: [&str; 3] = [
    "embeddings.position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
];

/// `model` with every parameter read from the Hugging Face checkpoint `path`.
pub fn load_pretrained<B: Backend>(
    mut model: Bert<B, Linear<B>>,
    path: &Path,
) -> Result<Bert<B, Linear<B>>> {
    if !path.is_file() {
        bail!("no checkpoint at `{}`", path.display());
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .with_key_remapping(r"\.LayerNorm\.weight$", ".layer_norm.gamma")
        .with_key_remapping(r"\.LayerNorm\.bias$", ".layer_norm.beta")
        .with_key_remapping(r"\.attention\.self\.", ".attention.")
        .with_key_remapping(r"\.intermediate\.dense\.", ".intermediate.")
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| anyhow!("cannot load `{}`: {e}", path.display()))?;
    let unused: Vec<&String> = result
        .unused
        .iter()
        .filter(|name| !NOT_USED.contains(&name.as_str()))
        .collect();
    if !result.errors.is_empty() || !result.missing.is_empty() || !unused.is_empty() {
        let missing: Vec<&String> = result.missing.iter().map(|(name, _)| name).collect();
        bail!(
            "`{}` does not fit the encoder of config.json: missing {missing:?}, unused {unused:?}, \
             errors {:?}",
            path.display(),
            result.errors
        );
    }
    Ok(model)
}

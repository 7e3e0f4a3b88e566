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
//! burn-store's adapter recognises a linear layer by its module type, `Struct:Linear`; the
//! encoder's are `MoqLinear`s, so [`AsLinear`] shows them to it as `Linear`s (without it, the
//! square attention weights would load untransposed, and the others fail on their shape).
//!
//! `embeddings.position_ids` (a buffer, not a parameter) and BERT's pooler (`pooler.dense`,
//! which sentence-transformers does not use) are left unused; anything else unused, any
//! parameter missing and any shape that differs is an error.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use burn::tensor::backend::Backend;
use burn_store::{
    ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot,
};

use super::Bert;

/// Tensors of a Hugging Face BERT checkpoint that sentence embeddings do not use.
const NOT_USED: [&str; 3] = [
    "embeddings.position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
];

/// `model` with every parameter read from the Hugging Face checkpoint `path`.
pub fn load_pretrained<B: Backend>(mut model: Bert<B>, path: &Path) -> Result<Bert<B>> {
    if !path.is_file() {
        bail!("no checkpoint at `{}`", path.display());
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(AsLinear)
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

/// burn-store's [`PyTorchToBurnAdapter`], with each `MoqLinear` shown to it as the `Linear` it
/// is.
#[derive(Clone)]
struct AsLinear;

impl AsLinear {
    fn as_linear(container: &str) -> &str {
        match container {
            "Struct:MoqLinear" => "Struct:Linear",
            other => other,
        }
    }
}

impl ModuleAdapter for AsLinear {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let mut snapshot = snapshot.clone();
        if let Some(stack) = snapshot.container_stack.as_mut() {
            for container in stack.iter_mut() {
                *container = Self::as_linear(container).to_string();
            }
        }
        PyTorchToBurnAdapter.adapt(&snapshot)
    }

    fn get_alternative_param_name(&self, param_name: &str, container_type: &str) -> Option<String> {
        PyTorchToBurnAdapter.get_alternative_param_name(param_name, Self::as_linear(container_type))
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

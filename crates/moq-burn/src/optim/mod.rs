//! The MoQ optimizer wrapper (the guide's algorithm page (docs/algorithm.md), "Where it runs"), one file per stage:
//! [`builder`] (what is quantized, in which layers), [`step`] (one training step), [`provider`]
//! (eigenvalues), [`status`] (the live view), [`record`] (save and resume), [`export`] (the
//! trained weights as packed codes).
//!
//! [`MoqOptimizer`] wraps any burn [`Optimizer`](burn::optim::Optimizer) and is one itself, so it drops into a
//! hand-written loop or burn-train's `Learner` unchanged. It keeps full-precision master weights
//! for every quantized parameter; at each step it
//! 1. skips the step (and counts it) when a gradient holds NaN or Inf, as DeepSpeed skipped
//!    overflow steps;
//! 2. puts the masters back into the module and lets the inner optimizer update them with the
//!    gradient computed at the quantized weights (the straight-through estimator);
//! 3. advances the [`Schedule`] and, from `schedule_offset` on, writes each layer's scheduled
//!    fake-quantized masters (blended by the mixing ratio when `fp16_mixed_quantize` is on) into
//!    the module it returns, which the next forward pass uses.
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::{AdamConfig, GradientsParams, Optimizer};
//! use burn::tensor::{ElementConversion, Tensor};
//! use moq_burn::{Moq, moq_core::QuantizeConfig};
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let mut model: Linear<B> = LinearConfig::new(8, 4).init(&device);
//! let config = QuantizeConfig::builder().bits(12, 8).period(2).schedule_offset(0).build().unwrap();
//! let mut optim = Moq::new(config).init(AdamConfig::new().init(), &model).unwrap();
//! for _ in 0..20 {
//!     let x = Tensor::<B, 2>::ones([2, 8], &device);
//!     let loss = model.forward(x).powi_scalar(2).mean();
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = optim.step(1e-3, model, grads);
//! }
//! assert_eq!(optim.bits(0), Some(8)); // the weight: drops at steps 1, 3, 7, 15
//! ```

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use burn::module::ParamId;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use moq_core::{QuantSpec, QuantizeConfig, Schedule};

use crate::error::MoqBurnError;

pub mod auto_bits;
pub mod builder;
pub mod export;
pub mod provider;
pub mod record;
pub mod status;
pub mod step;

pub use auto_bits::{AutoBits, LayerAllocation};
pub use builder::{Moq, MoqLayer};
pub use provider::{EigenvalueProvider, FixedEigenvalues};
pub use record::MoqRecord;
pub use status::{MoqStatus, StatusSnapshot};

/// A quantized parameter: where it is, its shape, its layer and its noise stream.
#[derive(Clone, Debug)]
pub(crate) struct QuantParam {
    pub(crate) id: ParamId,
    pub(crate) path: String,
    pub(crate) shape: Vec<usize>,
    pub(crate) layer: usize,
    pub(crate) stream: u64,
    /// Its groups: `quantize_groups`, or its size over [`Moq::group_size`](crate::Moq::group_size).
    pub(crate) groups: usize,
}

impl QuantParam {
    /// How it is quantized at `bits`: the config's type and rounding, its own groups.
    pub(crate) fn spec(&self, config: &QuantizeConfig, bits: u32) -> QuantSpec {
        QuantSpec {
            groups: self.groups,
            ..QuantSpec::from_config(config, bits)
        }
    }

    pub(crate) fn shape_as<const D: usize>(&self) -> [usize; D] {
        let mut dims = [1; D];
        dims.copy_from_slice(&self.shape);
        dims
    }
}

type SharedProvider<M> = Arc<Mutex<dyn EigenvalueProvider<M>>>;

/// The MoQ optimizer: an [`Optimizer`](burn::optim::Optimizer) wrapping another one. Built by [`Moq::init`].
///
/// The full-precision masters live here, not in the model: after the first step the model holds
/// quantized weights, and each step starts from the masters. To continue a saved run, load the
/// model's record *and* this optimizer's record; weights loaded into the model alone are
/// overwritten by the masters at the next step (build a new optimizer to start from them).
pub struct MoqOptimizer<O, M, B: AutodiffBackend> {
    pub(crate) inner: O,
    pub(crate) config: QuantizeConfig,
    pub(crate) seed: u64,
    pub(crate) params: Arc<Vec<QuantParam>>,
    pub(crate) layers: Arc<Vec<MoqLayer>>,
    pub(crate) index: HashMap<ParamId, usize>,
    /// Full-precision masters, flattened.
    pub(crate) masters: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    pub(crate) schedule: Schedule,
    pub(crate) skipped_steps: u64,
    pub(crate) eigenvalues: Option<SharedProvider<M>>,
    pub(crate) last_error: Arc<Mutex<Option<MoqBurnError>>>,
    pub(crate) status: MoqStatus,
    /// Second-order bit allocation, when asked for ([`Moq::auto_bits`]).
    pub(crate) auto_bits: Option<AutoBits>,
    /// Its result, once made.
    pub(crate) allocation: Option<Arc<Vec<LayerAllocation>>>,
    pub(crate) _types: PhantomData<fn() -> (M, B)>,
}

impl<O: Clone, M, B: AutodiffBackend> Clone for MoqOptimizer<O, M, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
            seed: self.seed,
            params: self.params.clone(),
            layers: self.layers.clone(),
            index: self.index.clone(),
            masters: self.masters.clone(),
            schedule: self.schedule.clone(),
            skipped_steps: self.skipped_steps,
            eigenvalues: self.eigenvalues.clone(),
            last_error: self.last_error.clone(),
            status: self.status.clone(),
            auto_bits: self.auto_bits.clone(),
            allocation: self.allocation.clone(),
            _types: PhantomData,
        }
    }
}

impl<O, M, B: AutodiffBackend> MoqOptimizer<O, M, B> {
    pub(crate) fn indexed(mut self) -> Self {
        self.index = self
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id, i))
            .collect();
        self
    }

    /// Sets the source of per-layer eigenvalues (`eigenvalue.enabled` in the config). Attach it
    /// before loading a record, so the provider's saved state reaches it.
    pub fn with_eigenvalues(mut self, provider: impl EigenvalueProvider<M> + 'static) -> Self {
        self.eigenvalues = Some(Arc::new(Mutex::new(provider)));
        self
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The config in use.
    pub fn config(&self) -> &QuantizeConfig {
        &self.config
    }

    /// The layers, in schedule order.
    pub fn layers(&self) -> &[MoqLayer] {
        &self.layers
    }

    /// Paths of the quantized parameters.
    pub fn quantized_params(&self) -> Vec<&str> {
        self.params.iter().map(|p| p.path.as_str()).collect()
    }

    /// The schedule's state.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Bits of `layer` now (`None` before the first quantizing step).
    pub fn bits(&self, layer: usize) -> Option<u32> {
        self.schedule.bits(layer)
    }

    /// Bits of every layer now.
    pub fn layer_bits(&self) -> Vec<Option<u32>> {
        (0..self.layers.len())
            .map(|l| self.schedule.bits(l))
            .collect()
    }

    /// The mixing ratio `ρ` of `layer` (0 when mixing is off).
    pub fn mix_ratio(&self, layer: usize) -> f32 {
        self.schedule.mix_ratio(layer)
    }

    /// A live view of the schedule that stays valid after the optimizer is moved (into a
    /// `Learner`, say).
    pub fn status(&self) -> MoqStatus {
        self.status.clone()
    }

    pub(crate) fn publish_status(&self) {
        self.status.update(StatusSnapshot {
            steps: self.schedule.steps_taken(),
            skipped_steps: self.skipped_steps,
            bits: self.layer_bits(),
            mix_ratios: (0..self.layers.len())
                .map(|l| self.schedule.mix_ratio(l))
                .collect(),
            allocation: self.allocation.clone(),
        });
    }

    /// The second-order bit allocation ([`Moq::auto_bits`]): per layer its sensitivity,
    /// size, error at each candidate width and the width chosen; `None` before the end of the
    /// warm-up or without `auto_bits`.
    pub fn allocation(&self) -> Option<&[LayerAllocation]> {
        self.allocation.as_deref().map(Vec::as_slice)
    }

    /// Steps skipped because a gradient held NaN or Inf.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// The last error met while quantizing (a parameter that became NaN or Inf is left
    /// unquantized and reported here), taken out.
    pub fn take_error(&self) -> Option<MoqBurnError> {
        self.last_error.lock().map(|mut e| e.take()).unwrap_or(None)
    }
}

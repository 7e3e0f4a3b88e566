//! # moq-hessian
//!
//! MoQ's second-order part: the top eigenvalue of the loss Hessian restricted to each layer
//! (a *block* of parameters), by power iteration, used to stretch that layer's quantization
//! period by the factor `1 + floor(4e)` of docs/algorithm.md (applied by
//! [`moq_core::Schedule::set_eigenvalues`]).
//!
//! - [`HessianLoss`]: your model, generic over the backend, and its loss on a probe batch.
//! - [`hessian_vector_product`] ([`hvp`]): `H_bb v_b`, exact through nested autodiff
//!   (`Autodiff<Autodiff<B>>`, the default) or by central finite differences of gradients
//!   ([`HvpMethod`]).
//! - [`power_iteration`] ([`power`]) with DeepSpeed's `max_iter`, `tol` and `stability`, and
//!   [`normalize_eigenvalues`].
//! - [`HessianEigenvalues`]: all blocks at once, with seeded start vectors (its own generator,
//!   so your random stream is untouched) and warm starts from the previous eigenvectors.
//!
//! `moq-burn` plugs [`HessianEigenvalues`] into its optimizer wrapper as the eigenvalue
//! provider; this crate does not depend on it.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::{Tensor, TensorData, backend::Backend};
//! use moq_hessian::{Block, HessianEigenvalues, HessianLoss, Weights, moq_core::EigenvalueConfig};
//!
//! struct Probe(TensorData);
//!
//! impl HessianLoss for Probe {
//!     type Model<B: Backend> = Linear<B>;
//!     fn model<B: Backend>(&self, device: &B::Device) -> Linear<B> {
//!         LinearConfig::new(3, 1).with_bias(false).init(device)
//!     }
//!     fn loss<B: Backend>(&self, model: &Linear<B>) -> Tensor<B, 1> {
//!         let x = Tensor::<B, 2>::from_data(self.0.clone(), &model.weight.device());
//!         model.forward(x).powi_scalar(2).mean()
//!     }
//! }
//!
//! // loss = mean over the rows x of (x·w)²: its Hessian is 2·XᵀX/3 = diag(2, 8, 18)/3.
//! let x = TensorData::new(vec![1.0f32, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0], [3, 3]);
//! let device = Default::default();
//! let model: Linear<NdArray> = LinearConfig::new(3, 1).with_bias(false).init(&device);
//! let config = EigenvalueConfig { tol: 1e-6, max_iter: 200, ..Default::default() };
//! let mut eigen = HessianEigenvalues::new(Probe(x), &config);
//! let report = eigen
//!     .compute(&Weights::from_module(&model), &[Block::new("fc", ["weight"])])
//!     .unwrap();
//! assert!((report.blocks[0].eigenvalue - 6.0).abs() < 1e-3); // 2·3²/3
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod error;
pub mod hvp;
pub mod path;
pub mod power;

use std::collections::HashMap;
use std::marker::PhantomData;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moq_core::{EigenvalueConfig, NoiseKey};
use serde::{Deserialize, Serialize};

pub use error::{HessianError, Result};
pub use hvp::{Block, HessianLoss, HvpMethod, Nested, Weights, hessian_vector_product};
pub use moq_core;
pub use power::{Eigenpair, PowerIteration, normalize_eigenvalues, power_iteration};

use hvp::Products;

/// Top Hessian eigenvalues of every block, recomputed as training goes.
///
/// Keeps each block's last eigenvector and starts the next computation from it (a warm start:
/// the Hessian moves slowly, so a few products usually suffice); the first computation, and
/// any block whose shapes changed, starts from a seeded random vector.
pub struct HessianEigenvalues<B: Backend, L: HessianLoss> {
    loss: L,
    options: PowerIteration,
    method: HvpMethod,
    seed: u64,
    warm_start: bool,
    verbose: bool,
    /// Each block's last eigenvector, on the host (a few values per parameter; it makes the
    /// state serializable, so a resumed run starts as warm as an uninterrupted one).
    previous: HashMap<String, Vec<Vec<f32>>>,
    computations: u64,
    /// burn's message when [`HvpMethod::Auto`] found the loss not twice differentiable.
    exact_failed: Option<String>,
    _backend: PhantomData<fn() -> B>,
}

/// What a [`HessianEigenvalues`] carries from one computation to the next: save it with a
/// checkpoint ([`HessianEigenvalues::state`]) so a resumed run computes the same values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EigenState {
    /// Computations done (it seeds the next random start).
    pub computations: u64,
    /// Why exact products are not used, if [`HvpMethod::Auto`] found so.
    pub exact_unavailable: Option<String>,
    /// Each block's last eigenvector: `(block name, one vector per parameter)`.
    pub vectors: Vec<(String, Vec<Vec<f32>>)>,
}

/// One block's result.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockEigenvalue {
    /// The block's name.
    pub block: String,
    /// The top eigenvalue by magnitude, with its sign.
    pub eigenvalue: f32,
    /// Power iterations, which is also the number of Hessian-vector products taken (each one
    /// forward and two backward passes when exact, two forwards and two backwards when by
    /// finite differences).
    pub iterations: u32,
    /// Whether λ settled within `tol` before `max_iter`.
    pub converged: bool,
    /// Whether it started from the previous eigenvector.
    pub warm: bool,
    /// Whether the products were exact (else finite differences).
    pub exact: bool,
}

/// The result of one computation over all blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct EigenReport {
    /// Per block, in the order given.
    pub blocks: Vec<BlockEigenvalue>,
    /// The eigenvalues normalised to `[0, 1]` ([`normalize_eigenvalues`]), what the schedule
    /// takes.
    pub normalized: Vec<f32>,
}

impl EigenReport {
    /// Hessian-vector products taken over all blocks.
    pub fn hvps(&self) -> u32 {
        self.blocks.iter().map(|b| b.iterations).sum()
    }
}

impl<B: Backend, L: HessianLoss> HessianEigenvalues<B, L> {
    /// Power iteration as the `eigenvalue` config section says, [`HvpMethod::Auto`] products,
    /// seed 0, warm starts on.
    pub fn new(loss: L, config: &EigenvalueConfig) -> Self {
        Self {
            loss,
            options: PowerIteration::from(config),
            method: HvpMethod::default(),
            seed: 0,
            warm_start: true,
            verbose: config.verbose,
            previous: HashMap::new(),
            computations: 0,
            exact_failed: None,
            _backend: PhantomData,
        }
    }

    /// Chooses exact or finite-difference products.
    pub fn method(mut self, method: HvpMethod) -> Self {
        self.method = method;
        self
    }

    /// Seed of the random start vectors (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Turns warm starts on (the default) or off.
    pub fn warm_start(mut self, on: bool) -> Self {
        self.warm_start = on;
        self
    }

    /// Replaces the power-iteration options.
    pub fn options(mut self, options: PowerIteration) -> Self {
        self.options = options;
        self
    }

    /// The loss (with its probe batch).
    pub fn loss_mut(&mut self) -> &mut L {
        &mut self.loss
    }

    /// Why exact products are not used, when [`HvpMethod::Auto`] fell back to finite
    /// differences (burn's message about the op it cannot differentiate twice).
    pub fn exact_unavailable(&self) -> Option<&str> {
        self.exact_failed.as_deref()
    }

    /// Computations done so far.
    pub fn computations(&self) -> u64 {
        self.computations
    }

    /// Forgets the previous eigenvectors: the next computation starts cold.
    pub fn reset(&mut self) {
        self.previous.clear();
    }

    /// The state carried between computations, for a checkpoint.
    pub fn state(&self) -> EigenState {
        let mut vectors: Vec<_> = self
            .previous
            .iter()
            .map(|(name, v)| (name.clone(), v.clone()))
            .collect();
        vectors.sort_by(|a, b| a.0.cmp(&b.0));
        EigenState {
            computations: self.computations,
            exact_unavailable: self.exact_failed.clone(),
            vectors,
        }
    }

    /// Restores a state saved by [`HessianEigenvalues::state`].
    pub fn load_state(&mut self, state: EigenState) {
        self.computations = state.computations;
        self.exact_failed = state.exact_unavailable;
        self.previous = state.vectors.into_iter().collect();
    }

    /// Computes every block's top eigenvalue at `weights`.
    pub fn compute(&mut self, weights: &Weights<B>, blocks: &[Block]) -> Result<EigenReport> {
        self.options.validate()?;
        if blocks.is_empty() {
            return Err(HessianError::NoBlocks);
        }
        let resolved = blocks
            .iter()
            .map(|b| weights.resolve(b))
            .collect::<Result<Vec<_>>>()?;
        let device = weights.device().expect("a resolved block has parameters");
        self.loss.next_batch();
        let mut products = Products::new(&self.loss);
        let mut results = Vec::with_capacity(blocks.len());
        for (b, (block, indices)) in blocks.iter().zip(&resolved).enumerate() {
            let (start, is_warm) = self.start_vector(weights, block, b, &device);
            let (exact, step) = match self.method {
                HvpMethod::Exact => (true, 0.0),
                HvpMethod::FiniteDifference { relative_step } => (false, relative_step),
                HvpMethod::Auto { relative_step } => (self.exact_failed.is_none(), relative_step),
            };
            let mut pair = if exact {
                power_iteration(start.clone(), &self.options, |v| {
                    products.exact(weights, block, indices, v)
                })
            } else {
                power_iteration(start.clone(), &self.options, |v| {
                    products.finite_difference(weights, indices, v, step)
                })
            };
            let mut used_exact = exact;
            if let (
                HvpMethod::Auto { .. },
                Err(HessianError::NotTwiceDifferentiable { reason, .. }),
            ) = (self.method, &pair)
            {
                log::warn!(
                    "MoQ eigenvalues: burn cannot differentiate this loss twice ({reason}); \
                     using finite-difference Hessian-vector products from now on"
                );
                self.exact_failed = Some(reason.clone());
                used_exact = false;
                pair = power_iteration(start, &self.options, |v| {
                    products.finite_difference(weights, indices, v, step)
                });
            }
            let pair = pair?;
            if self.verbose {
                log_eigenpair(&block.name, &pair, is_warm);
            }
            results.push((
                BlockEigenvalue {
                    block: block.name.clone(),
                    eigenvalue: pair.value,
                    iterations: pair.iterations,
                    converged: pair.converged,
                    warm: is_warm,
                    exact: used_exact,
                },
                pair.vector,
            ));
        }
        self.computations += 1;
        Ok(self.keep_vectors(results))
    }

    /// The start of power iteration on block number `b`: the block's previous eigenvector
    /// (warm, when warm starts are on and the shapes still fit) or a seeded random vector.
    fn start_vector(
        &self,
        weights: &Weights<B>,
        block: &Block,
        b: usize,
        device: &B::Device,
    ) -> (Vec<Tensor<B, 1>>, bool) {
        let numels: Vec<usize> = block
            .params
            .iter()
            .map(|p| weights.shape(p).map_or(0, |s| s.iter().product()))
            .collect();
        let warm = self
            .previous
            .get(&block.name)
            .filter(|v| self.warm_start && v.iter().map(Vec::len).eq(numels.iter().copied()));
        match warm {
            Some(v) => (v.iter().map(|v| upload(v.clone(), device)).collect(), true),
            None => (
                random_start(&numels, self.seed, self.computations, b, device),
                false,
            ),
        }
    }

    /// Keeps each block's eigenvector (on the host) for the next warm start, and reports.
    fn keep_vectors(&mut self, results: Vec<(BlockEigenvalue, Vec<Tensor<B, 1>>)>) -> EigenReport {
        let mut report = Vec::with_capacity(results.len());
        for (result, vector) in results {
            let host = vector
                .into_iter()
                .map(|t| t.into_data().iter::<f32>().collect())
                .collect();
            self.previous.insert(result.block.clone(), host);
            report.push(result);
        }
        let raw: Vec<f32> = report.iter().map(|b| b.eigenvalue).collect();
        EigenReport {
            normalized: normalize_eigenvalues(&raw),
            blocks: report,
        }
    }
}

/// The verbose line of one block's eigenvalue.
fn log_eigenpair<B: Backend>(block: &str, pair: &Eigenpair<B>, warm: bool) {
    log::info!(
        "MoQ eigenvalue: block {block} λ = {:.6e} ({} iterations, {}{})",
        pair.value,
        pair.iterations,
        if warm { "warm" } else { "cold" },
        if pair.converged {
            ""
        } else {
            ", not converged"
        }
    );
}

/// A start vector uniform in (−½, ½) from moq-core's counter-based generator: reproducible per
/// (seed, computation, block) and independent of any other random stream.
fn random_start<B: Backend>(
    numels: &[usize],
    seed: u64,
    computation: u64,
    block: usize,
    device: &B::Device,
) -> Vec<Tensor<B, 1>> {
    numels
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let keys = NoiseKey {
                seed,
                step: computation,
                stream: ((block as u64) << 20) | k as u64,
            }
            .keys();
            upload((0..n as u64).map(|i| keys.offset(i)).collect(), device)
        })
        .collect()
}

fn upload<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

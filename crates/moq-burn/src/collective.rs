//! MoQ under data parallelism across processes, with burn-collective (feature `collective`;
//! the guide's page docs/distributed.md).
//!
//! Each peer (a process, or a device of one) holds a replica of the model and its own
//! [`MoqOptimizer`](crate::MoqOptimizer). burn does the gradient part:
//! `GradientsParams::all_reduce` averages the gradients, so every peer steps with the same
//! gradient, and the wrapper, which is deterministic in the step, the seed and the parameter
//! path (stochastic rounding included), then writes the same quantized weights everywhere.
//! What it needs besides, and this module gives:
//!
//! - [`replicate`]: the same replica on every peer before the first step. burn draws parameter
//!   ids at random in each process, and `GradientsParams::all_reduce` pairs the peers'
//!   gradients by sorted id: replicas built separately would sum unrelated gradients.
//! - [`RootEigenvalues`]: one eigenvalue decision for all. The root peer computes them and the
//!   others receive its values, so every schedule stretches alike even when peers run on
//!   different CPUs whose vector units round differently.

use burn::collective::{PeerId, ReduceOperation, all_reduce};
use burn::module::{AutodiffModule, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use moq_hessian::path::{NamedMapper, map_named};

use crate::error::{MoqBurnError, Result};
use crate::optim::{EigenvalueProvider, MoqLayer};

/// `tensor` as the root peer holds it, on every peer: the root adds its values to an
/// all-reduce (sum) to which every other peer adds zeros. `x + 0` is exact, so every peer gets
/// the root's bits (a `-0.0` becomes `+0.0`, everywhere alike).
fn from_root<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    peer: PeerId,
    root: bool,
    what: &str,
) -> Result<Tensor<B, D>> {
    let sent = if root { tensor } else { tensor.zeros_like() };
    let shared = all_reduce::<B>(peer, sent.into_primitive().tensor(), ReduceOperation::Sum)
        .map_err(|err| MoqBurnError::Collective {
            operation: "all-reduce",
            what: what.to_string(),
            reason: format!("{err}"),
        })?;
    Ok(Tensor::from_primitive(TensorPrimitive::Float(shared)))
}

/// The id a parameter gets from its module path: the same in every process.
fn path_id(path: &str) -> ParamId {
    // FNV-1a, 64 bits.
    let hash = path.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    ParamId::from(hash)
}

/// Makes `model` the same replica on every peer: each float parameter gets an id derived
/// from its module path, and the root peer's values. Call it on every peer after
/// `burn::collective::register` and before [`Moq::init`](crate::Moq::init) (the optimizer
/// keys its masters by id). Each parameter is one all-reduce, so every peer must call it
/// with the same model structure.
///
/// Errors: [`MoqBurnError::Collective`] naming the parameter whose all-reduce failed.
pub fn replicate<B, M>(model: M, peer: PeerId, root: bool) -> Result<M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut share = Share {
        peer,
        root,
        error: None,
    };
    let model = map_named(model, &mut share);
    match share.error {
        Some(err) => Err(err),
        None => Ok(model),
    }
}

struct Share {
    peer: PeerId,
    root: bool,
    error: Option<MoqBurnError>,
}

impl<B: AutodiffBackend> NamedMapper<B> for Share {
    fn map_named<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if self.error.is_some() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        match from_root(tensor.clone().inner(), self.peer, self.root, path) {
            Ok(shared) => {
                let shared = Tensor::from_inner(shared);
                let shared = if require_grad {
                    shared.require_grad()
                } else {
                    shared
                };
                Param::from_mapped_value(path_id(path), shared, mapper)
            }
            Err(err) => {
                self.error = Some(err);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

/// An [`EigenvalueProvider`] for data-parallel peers: the root peer asks `inner`, every other
/// peer receives the root's answer (values, "keep the previous ones", or the root's failure)
/// through one all-reduce of `layers + 1` floats. Wrap the same provider on every peer: the
/// others never call theirs, but hold its state, so a checkpoint saved by the root resumes on
/// any peer.
///
/// Computing on every peer would cost the same wall time (the peers run in parallel, and the
/// step waits for the slowest anyway) but would agree only where every peer rounds alike:
/// eigenvalues from power iteration on different CPUs, or GPUs of different generations,
/// differ in their last bits, and a schedule stretched by a different period on one peer
/// drops its bits at a different step. Sharing costs one all-reduce of a few floats.
pub struct RootEigenvalues<B: Backend, P> {
    inner: P,
    peer: PeerId,
    root: bool,
    device: B::Device,
}

impl<B: Backend, P> RootEigenvalues<B, P> {
    /// Wraps `inner` for `peer`; `root` is true on exactly one peer; `device` carries the
    /// all-reduce (the backend registered with burn-collective, the inner one under autodiff).
    pub fn new(inner: P, peer: PeerId, root: bool, device: B::Device) -> Self {
        Self {
            inner,
            peer,
            root,
            device,
        }
    }

    /// What the root decided, on every peer: `ask` runs on the root only.
    fn shared(
        &mut self,
        layers: usize,
        what: &str,
        ask: impl FnOnce(&mut P) -> Result<Option<Vec<f32>>>,
    ) -> Result<Option<Vec<f32>>> {
        // [status, value per layer]: status 1 = values, 0 = keep the previous ones, 2 = failed.
        let mut message = vec![0.0_f32; layers + 1];
        let mut failure = None;
        if self.root {
            match ask(&mut self.inner) {
                Ok(Some(values)) if values.len() == layers => {
                    message[0] = 1.0;
                    message[1..].copy_from_slice(&values);
                }
                Ok(Some(values)) => {
                    message[0] = 2.0;
                    failure = Some(MoqBurnError::Collective {
                        operation: "all-reduce",
                        what: what.to_string(),
                        reason: format!(
                            "the provider gave {} values for {layers} layers",
                            values.len()
                        ),
                    });
                }
                Ok(None) => {}
                Err(err) => {
                    message[0] = 2.0;
                    failure = Some(err);
                }
            }
        }
        let sent = Tensor::<B, 1>::from_data(TensorData::new(message, [layers + 1]), &self.device);
        let received = from_root(sent, self.peer, self.root, what)?
            .into_data()
            .into_vec::<f32>()
            .map_err(|err| MoqBurnError::Collective {
                operation: "all-reduce",
                what: what.to_string(),
                reason: format!("{err}"),
            })?;
        match received[0] {
            0.0 => Ok(None),
            1.0 => Ok(Some(received[1..].to_vec())),
            _ => Err(failure.unwrap_or_else(|| MoqBurnError::Collective {
                operation: "all-reduce",
                what: what.to_string(),
                reason: "the root peer failed to compute them (its error is reported there)".into(),
            })),
        }
    }
}

impl<M, B: Backend, P: EigenvalueProvider<M>> EigenvalueProvider<M> for RootEigenvalues<B, P> {
    fn eigenvalues(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>> {
        self.shared(layers.len(), "eigenvalues", |p| {
            p.eigenvalues(model, layers)
        })
    }

    fn sensitivities(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>> {
        self.shared(layers.len(), "sensitivities", |p| {
            p.sensitivities(model, layers)
        })
    }

    fn save_state(&self) -> Option<String> {
        self.inner.save_state()
    }

    fn load_state(&mut self, state: &str) -> Result<()> {
        self.inner.load_state(state)
    }
}

//! Where per-layer eigenvalues come from: the [`EigenvalueProvider`] trait.

use super::MoqLayer;
use crate::error::Result;

/// Supplies normalized per-layer eigenvalues (in `[0, 1]`, in [`super::MoqOptimizer::layers`] order)
/// when the schedule needs them. [`crate::HessianProvider`] computes them from the model's
/// Hessian; [`FixedEigenvalues`] replays known ones.
///
/// The wrapper asks at every `gas_boundary_resolution`-th step after which some layer will lose
/// a bit before the next such step. An eigenvalue only matters at a drop (it sets the period
/// after it), so this gives exactly the schedule of DeepSpeed's rule (ask at every such step
/// while a layer is above its target) at a fraction of the cost.
pub trait EigenvalueProvider<M>: Send {
    /// The eigenvalues at this point of training, or `None` to keep the previous ones. An
    /// error is reported through [`super::MoqOptimizer::take_error`] and the previous values stay.
    fn eigenvalues(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>>;

    /// Per-layer sensitivities for second-order bit allocation ([`super::Moq::auto_bits`]):
    /// the magnitude of each layer's top Hessian eigenvalue, `|λ|` as measured, or `None` to
    /// allocate without them. The default returns [`EigenvalueProvider::eigenvalues`]: values
    /// normalised by the largest `|λ|` differ from `|λ|` by one common factor, which leaves
    /// the allocation unchanged.
    fn sensitivities(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>> {
        self.eigenvalues(model, layers)
    }

    /// State to keep in the optimizer's record (warm-start vectors, counters), so a resumed
    /// run computes the same eigenvalues as an uninterrupted one. `None` when stateless.
    fn save_state(&self) -> Option<String> {
        None
    }

    /// Restores what [`EigenvalueProvider::save_state`] returned.
    fn load_state(&mut self, _state: &str) -> Result<()> {
        Ok(())
    }
}

impl<M, P: EigenvalueProvider<M> + ?Sized> EigenvalueProvider<M> for Box<P> {
    fn eigenvalues(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>> {
        (**self).eigenvalues(model, layers)
    }

    fn sensitivities(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>> {
        (**self).sensitivities(model, layers)
    }

    fn save_state(&self) -> Option<String> {
        (**self).save_state()
    }

    fn load_state(&mut self, state: &str) -> Result<()> {
        (**self).load_state(state)
    }
}

/// Fixed eigenvalues: for tests, and to reproduce a schedule planned with `moq schedule
/// --eigenvalues`.
#[derive(Clone, Debug)]
pub struct FixedEigenvalues(pub Vec<f32>);

impl<M> EigenvalueProvider<M> for FixedEigenvalues {
    fn eigenvalues(&mut self, _model: &M, _layers: &[MoqLayer]) -> Result<Option<Vec<f32>>> {
        Ok(Some(self.0.clone()))
    }
}

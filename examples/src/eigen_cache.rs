//! [`EigenCache`]: the eigenvalues of a model state computed once per process.
//!
//! The study's second-order cells allocate widths at the end of the same full-precision
//! warm-up: for one seed, every width and both schedules (QAT and MoQ) measure the Hessian of
//! the same model on the same probe batch, which costs minutes each on MiniLM. A provider
//! wrapped by [`EigenCache::wrap`] answers a request it has seen from the cache: the request is
//! the probe batch (named by the caller), the model's parameter values (hashed bit for bit),
//! the layers' parameters (not their widths, which the Hessian does not depend on), the
//! provider's saved state before the call and which quantity is asked for; the answer is the
//! values and the state after the call, so a run served from the cache goes on exactly as one
//! that computed them. Power iteration is deterministic on a given backend, so the values are
//! the ones the provider would compute; only the time differs. The providers that share one
//! cache must be configured alike (iterations, tolerance): the key does not include it, and the
//! study builds every provider of a task from the same settings.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use moq_burn::{EigenvalueProvider, MoqLayer};

/// What was asked of a provider: a hash of the request, and what it answered.
type Answers = HashMap<u64, (Option<Vec<f32>>, Option<String>)>;

/// The answers of every provider wrapped by one cache (clones share them).
#[derive(Clone, Default)]
pub struct EigenCache {
    answers: Arc<Mutex<Answers>>,
}

impl EigenCache {
    /// `provider` answering from this cache where it can. `probe` names what the provider
    /// measures on besides the model (its probe batch: the seed it was drawn with), which the
    /// cache cannot see.
    pub fn wrap<B, M>(
        &self,
        provider: Box<dyn EigenvalueProvider<M>>,
        probe: u64,
    ) -> Box<dyn EigenvalueProvider<M>>
    where
        B: Backend,
        M: Module<B> + 'static,
    {
        Box::new(Cached::<B, M> {
            inner: provider,
            probe,
            cache: self.clone(),
            _model: std::marker::PhantomData,
        })
    }
}

struct Cached<B: Backend, M> {
    inner: Box<dyn EigenvalueProvider<M>>,
    probe: u64,
    cache: EigenCache,
    _model: std::marker::PhantomData<fn() -> B>,
}

impl<B: Backend, M: Module<B>> Cached<B, M> {
    /// The cached answer to `kind` for `model`, or the provider's, kept.
    fn answer(
        &mut self,
        kind: &str,
        model: &M,
        layers: &[MoqLayer],
        ask: impl FnOnce(&mut dyn EigenvalueProvider<M>) -> moq_burn::Result<Option<Vec<f32>>>,
    ) -> moq_burn::Result<Option<Vec<f32>>> {
        let mut hasher = DefaultHasher::new();
        (kind, self.probe).hash(&mut hasher);
        self.inner.save_state().hash(&mut hasher);
        // The layers' parameters, not their widths: the Hessian does not depend on them.
        for layer in layers {
            (&layer.name, &layer.params).hash(&mut hasher);
        }
        model.visit(&mut ParamHasher(&mut hasher));
        let key = hasher.finish();
        let known = self
            .cache
            .answers
            .lock()
            .ok()
            .and_then(|a| a.get(&key).cloned());
        if let Some((values, state)) = known {
            if let Some(state) = &state {
                self.inner.load_state(state)?;
            }
            println!("    eigenvalues: {kind} of this model state from the cache");
            return Ok(values);
        }
        let values = ask(self.inner.as_mut())?;
        if let Ok(mut answers) = self.cache.answers.lock() {
            answers.insert(key, (values.clone(), self.inner.save_state()));
        }
        Ok(values)
    }
}

impl<B: Backend, M: Module<B>> EigenvalueProvider<M> for Cached<B, M> {
    fn eigenvalues(
        &mut self,
        model: &M,
        layers: &[MoqLayer],
    ) -> moq_burn::Result<Option<Vec<f32>>> {
        self.answer("eigenvalues", model, layers, |p| {
            p.eigenvalues(model, layers)
        })
    }

    fn sensitivities(
        &mut self,
        model: &M,
        layers: &[MoqLayer],
    ) -> moq_burn::Result<Option<Vec<f32>>> {
        self.answer("sensitivities", model, layers, |p| {
            p.sensitivities(model, layers)
        })
    }

    fn save_state(&self) -> Option<String> {
        self.inner.save_state()
    }

    fn load_state(&mut self, state: &str) -> moq_burn::Result<()> {
        self.inner.load_state(state)
    }
}

/// Hashes every float parameter's values, bit for bit, in visiting order.
struct ParamHasher<'a>(&'a mut DefaultHasher);

impl<B: Backend> ModuleVisitor<B> for ParamHasher<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let data = param.val().into_data();
        data.shape.hash(self.0);
        data.as_bytes().hash(self.0);
    }
}

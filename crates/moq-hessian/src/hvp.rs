//! Hessian-vector products of one parameter block: exact, through nested autodiff, or by
//! central finite differences of gradients (docs/contributing.md, "Toolchain facts").
//!
//! Both build the user's model on an autodiff backend from [`HessianLoss::model`], load the
//! trained weights into it by path (a module mapper), mark the block's parameters as leaves and
//! run [`HessianLoss::loss`]. Only the block's parameters are tracked, so the product is
//! `H_bb v_b`: the Hessian restricted to the block.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::error::{HessianError, Result};
use crate::path::{NamedMapper, NamedVisitor, map_named, visit_named};
use crate::power::dot_and_norm2;

/// The backend exact products run on: autodiff over autodiff.
pub type Nested<B> = Autodiff<Autodiff<B>>;

/// The loss whose Hessian is probed: your model, generic over the backend, on a probe batch.
///
/// Rust closures cannot be generic, so this is a trait: the crate instantiates the model at
/// `Autodiff<Autodiff<B>>` for exact products and at `Autodiff<B>` for finite differences.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::{Tensor, TensorData, backend::Backend};
/// use moq_hessian::HessianLoss;
///
/// /// Mean squared error of a linear model on a fixed batch.
/// struct Probe {
///     x: TensorData,
///     y: TensorData,
/// }
///
/// impl HessianLoss for Probe {
///     type Model<B: Backend> = Linear<B>;
///
///     fn model<B: Backend>(&self, device: &B::Device) -> Linear<B> {
///         LinearConfig::new(4, 2).init(device) // weights are replaced by the trained ones
///     }
///
///     fn loss<B: Backend>(&self, model: &Linear<B>) -> Tensor<B, 1> {
///         let device = model.weight.device();
///         let x = Tensor::<B, 2>::from_data(self.x.clone(), &device);
///         let y = Tensor::<B, 2>::from_data(self.y.clone(), &device);
///         (model.forward(x) - y).powi_scalar(2).mean()
///     }
/// }
/// ```
pub trait HessianLoss {
    /// Your model type, generic over the backend (`Model<B>`).
    type Model<B: Backend>: Module<B>;

    /// Builds the model's structure on `device`. Its float parameters are all replaced by the
    /// trained weights, so a lazily initialised `config.init(device)` costs nothing.
    fn model<B: Backend>(&self, device: &B::Device) -> Self::Model<B>;

    /// The loss of `model` on the probe batch: a single value (shape `[1]`). It must use the
    /// same batch every time it is called between two [`HessianLoss::next_batch`] calls.
    fn loss<B: Backend>(&self, model: &Self::Model<B>) -> Tensor<B, 1>;

    /// Called once before each eigenvalue computation. Move to another probe batch here if you
    /// want one; the default keeps a fixed batch, which makes warm starts most effective.
    fn next_batch(&mut self) {}
}

/// How Hessian-vector products are computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HvpMethod {
    /// Exact where burn can differentiate the loss twice, else finite differences with this
    /// relative step. The default (step 1e-3).
    ///
    /// burn 0.21's autodiff cannot differentiate the backward of `nn::Linear` (its fused
    /// `linear` op), of embedding and pooling weights, or of `interpolate`; it panics when asked
    /// to. `Auto` finds burn's `Linear`, `Embedding` and `DeformConv2d` modules in the model
    /// before running it; for the rest it catches burn's panic (whose message the process's
    /// panic hook prints once). Either way it logs a warning naming the op and uses finite
    /// differences from then on. Catching needs the default `panic = "unwind"`; with
    /// `panic = "abort"`, choose a method explicitly.
    Auto {
        /// Step of the fallback, relative to the block's norm.
        relative_step: f32,
    },
    /// Exact, by differentiating the gradient (`Autodiff<Autodiff<B>>`). A loss that uses an op
    /// burn cannot differentiate twice gives [`HessianError::NotTwiceDifferentiable`].
    Exact,
    /// `(g(w + εv) − g(w − εv)) / 2ε` on `Autodiff<B>`, with `ε = relative_step · max(‖w_b‖, 1)
    /// / ‖v‖`: works for every model. Costs two gradients per product and is accurate to about
    /// `relative_step²` plus f32 noise.
    FiniteDifference {
        /// Step relative to the block's norm (1e-3 is a good start in f32).
        relative_step: f32,
    },
}

impl Default for HvpMethod {
    fn default() -> Self {
        Self::Auto {
            relative_step: 1e-3,
        }
    }
}

/// A block of parameters that shares one eigenvalue: a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The block's name (for messages and reports).
    pub name: String,
    /// Module paths of its parameters, as [`Weights`] names them (`layers.0.fc.weight`).
    pub params: Vec<String>,
}

impl Block {
    /// A block named `name` holding `params`.
    pub fn new(
        name: impl Into<String>,
        params: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            params: params.into_iter().map(Into::into).collect(),
        }
    }
}

/// A model's float parameters by module path, flattened: the point the Hessian is taken at.
#[derive(Clone, Debug)]
pub struct Weights<B: Backend> {
    params: Vec<Weight<B>>,
    index: HashMap<String, usize>,
}

#[derive(Clone, Debug)]
struct Weight<B: Backend> {
    path: String,
    shape: Vec<usize>,
    value: Tensor<B, 1>,
}

impl<B: Backend> Weights<B> {
    /// Collects every float parameter of `module` (for an autodiff model, pass
    /// `model.valid()`).
    pub fn from_module<M: Module<B>>(module: &M) -> Self {
        let mut collect = Collect { params: Vec::new() };
        visit_named(module, &mut collect);
        let index = collect
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.path.clone(), i))
            .collect();
        Self {
            params: collect.params,
            index,
        }
    }

    /// Module paths of the parameters, in visiting order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| p.path.as_str())
    }

    /// The flattened value of the parameter at `path`.
    pub fn get(&self, path: &str) -> Option<&Tensor<B, 1>> {
        self.index.get(path).map(|&i| &self.params[i].value)
    }

    /// The shape of the parameter at `path`.
    pub fn shape(&self, path: &str) -> Option<&[usize]> {
        self.index
            .get(path)
            .map(|&i| self.params[i].shape.as_slice())
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the model has no float parameters.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub(crate) fn device(&self) -> Option<B::Device> {
        self.params.first().map(|p| p.value.device())
    }

    /// Indices of a block's parameters, checked.
    pub(crate) fn resolve(&self, block: &Block) -> Result<Vec<usize>> {
        if block.params.is_empty() {
            return Err(HessianError::EmptyBlock {
                block: block.name.clone(),
            });
        }
        block
            .params
            .iter()
            .map(|path| {
                self.index
                    .get(path)
                    .copied()
                    .ok_or_else(|| HessianError::UnknownParam {
                        block: block.name.clone(),
                        path: path.clone(),
                    })
            })
            .collect()
    }
}

/// `H_bb v_b` for `block` at `weights`: one flat tensor per parameter of the block, in the
/// block's order. Builds the model each call; [`crate::HessianEigenvalues`] reuses it.
pub fn hessian_vector_product<B: Backend, L: HessianLoss>(
    loss: &L,
    weights: &Weights<B>,
    block: &Block,
    v: &[Tensor<B, 1>],
    method: HvpMethod,
) -> Result<Vec<Tensor<B, 1>>> {
    let indices = weights.resolve(block)?;
    if indices.len() != v.len() {
        return Err(HessianError::VectorParts {
            block: block.name.clone(),
            expected: indices.len(),
            found: v.len(),
        });
    }
    let mut products = Products::new(loss);
    match method {
        HvpMethod::Exact => products.exact(weights, block, &indices, v),
        HvpMethod::FiniteDifference { relative_step } => {
            products.finite_difference(weights, &indices, v, relative_step)
        }
        HvpMethod::Auto { relative_step } => match products.exact(weights, block, &indices, v) {
            Err(HessianError::NotTwiceDifferentiable { .. }) => {
                products.finite_difference(weights, &indices, v, relative_step)
            }
            other => other,
        },
    }
}

/// The models built once on the backends the products need, reused for every product.
pub(crate) struct Products<'a, B: Backend, L: HessianLoss> {
    loss: &'a L,
    nested: Option<L::Model<Nested<B>>>,
    /// Why exact products cannot run on the nested model, found from its modules once, when
    /// it is built.
    first_order: Option<String>,
    single: Option<L::Model<Autodiff<B>>>,
    /// `‖w_b‖` per block (by its parameter indices), for the finite-difference step.
    w_norms: HashMap<Vec<usize>, f64>,
}

impl<'a, B: Backend, L: HessianLoss> Products<'a, B, L> {
    pub(crate) fn new(loss: &'a L) -> Self {
        Self {
            loss,
            nested: None,
            first_order: None,
            single: None,
            w_norms: HashMap::new(),
        }
    }

    /// The exact product; a panic from burn's autodiff (an op it cannot differentiate twice)
    /// becomes [`HessianError::NotTwiceDifferentiable`].
    pub(crate) fn exact(
        &mut self,
        weights: &Weights<B>,
        block: &Block,
        indices: &[usize],
        v: &[Tensor<B, 1>],
    ) -> Result<Vec<Tensor<B, 1>>> {
        let device = weights.device().expect("a resolved block has parameters");
        let loss = self.loss;
        if self.nested.is_none() {
            let model = loss.model(&device);
            self.first_order = first_order_only(&model);
            self.nested = Some(model);
        }
        if let Some(reason) = &self.first_order {
            return Err(HessianError::NotTwiceDifferentiable {
                block: block.name.clone(),
                reason: reason.clone(),
            });
        }
        let model = self.nested.as_mut().expect("built above");
        // An op burn cannot differentiate twice that the module check above cannot see (a
        // functional `linear`, pooling, `interpolate`) makes burn panic: catch it, leaving the
        // process-wide panic hook alone (it prints burn's message once; the error carries it).
        let run = AssertUnwindSafe(|| exact(loss, model, weights, indices, v));
        let result = std::panic::catch_unwind(run);
        result.unwrap_or_else(|payload| {
            let reason = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic in burn's autodiff".to_string());
            Err(HessianError::NotTwiceDifferentiable {
                block: block.name.clone(),
                reason,
            })
        })
    }

    pub(crate) fn finite_difference(
        &mut self,
        weights: &Weights<B>,
        block: &[usize],
        v: &[Tensor<B, 1>],
        relative_step: f32,
    ) -> Result<Vec<Tensor<B, 1>>> {
        let device = weights.device().expect("a resolved block has parameters");
        let loss = self.loss;
        let model = self.single.get_or_insert_with(|| loss.model(&device));
        // ‖w_b‖ is fixed within a computation: read it once per block, not once per product.
        let w_norm = *self.w_norms.entry(block.to_vec()).or_insert_with(|| {
            let w: Vec<_> = block
                .iter()
                .map(|&i| weights.params[i].value.clone())
                .collect();
            dot_and_norm2(&w, &w).1.sqrt()
        });
        let (_, v2) = dot_and_norm2(v, v);
        if v2 == 0.0 {
            return Ok(v.to_vec());
        }
        let eps = relative_step as f64 * w_norm.max(1.0) / v2.sqrt();
        let plus = gradient(loss, model, weights, block, v, eps)?;
        let minus = gradient(loss, model, weights, block, v, -eps)?;
        Ok(plus
            .into_iter()
            .zip(minus)
            .map(|(p, m)| (p - m).div_scalar(2.0 * eps))
            .collect())
    }
}

/// Exact `H_bb v`: the block's parameters are leaves at both levels; the outer gradient `g`
/// is itself tracked by the inner level, and the inner backward of `Σ ⟨g_p, v_p⟩` gives `Hv`.
fn exact<B: Backend, L: HessianLoss>(
    loss: &L,
    template: &L::Model<Nested<B>>,
    weights: &Weights<B>,
    block: &[usize],
    v: &[Tensor<B, 1>],
) -> Result<Vec<Tensor<B, 1>>> {
    let mut values: HashMap<String, Tensor<Nested<B>, 1>> = HashMap::new();
    let mut leaves = Vec::with_capacity(block.len());
    for (i, p) in weights.params.iter().enumerate() {
        let inner = Tensor::<Autodiff<B>, 1>::from_inner(p.value.clone());
        let value = if block.contains(&i) {
            let inner = inner.require_grad();
            let outer = Tensor::<Nested<B>, 1>::from_inner(inner.clone()).require_grad();
            leaves.push((inner, outer.clone()));
            outer
        } else {
            Tensor::from_inner(inner)
        };
        values.insert(p.path.clone(), value);
    }
    let model = load(template, weights, values)?;
    let loss = scalar(loss.loss(&model))?;
    let grads = loss.backward();
    let mut dot: Option<Tensor<Autodiff<B>, 1>> = None;
    for ((_, outer), v) in leaves.iter().zip(v) {
        if let Some(g) = outer.grad(&grads) {
            let term = (g * Tensor::from_inner(v.clone())).sum();
            dot = Some(match dot {
                Some(d) => d + term,
                None => term,
            });
        }
    }
    let Some(dot) = dot else {
        // The loss does not depend on the block at all: its Hessian is zero.
        return Ok(v.iter().map(|t| t.zeros_like()).collect());
    };
    let grads = dot.backward();
    Ok(leaves
        .iter()
        .zip(v)
        .map(|((inner, _), v)| inner.grad(&grads).unwrap_or_else(|| v.zeros_like()))
        .collect())
}

/// The block's gradient at `w + step·v` (only the block moves).
fn gradient<B: Backend, L: HessianLoss>(
    loss: &L,
    template: &L::Model<Autodiff<B>>,
    weights: &Weights<B>,
    block: &[usize],
    v: &[Tensor<B, 1>],
    step: f64,
) -> Result<Vec<Tensor<B, 1>>> {
    let mut values: HashMap<String, Tensor<Autodiff<B>, 1>> = HashMap::new();
    let mut leaves = Vec::with_capacity(block.len());
    for (i, p) in weights.params.iter().enumerate() {
        let value = match block.iter().position(|&b| b == i) {
            Some(k) => {
                let moved = p.value.clone() + v[k].clone().mul_scalar(step);
                let leaf = Tensor::<Autodiff<B>, 1>::from_inner(moved).require_grad();
                leaves.push(leaf.clone());
                leaf
            }
            None => Tensor::from_inner(p.value.clone()),
        };
        values.insert(p.path.clone(), value);
    }
    let model = load(template, weights, values)?;
    let grads = scalar(loss.loss(&model))?.backward();
    Ok(leaves
        .iter()
        .map(|leaf| {
            leaf.grad(&grads)
                .unwrap_or_else(|| leaf.clone().inner().zeros_like())
        })
        .collect())
}

fn scalar<X: Backend>(loss: Tensor<X, 1>) -> Result<Tensor<X, 1>> {
    let shape = loss.dims().to_vec();
    if shape != [1] {
        return Err(HessianError::LossShape { shape });
    }
    Ok(loss)
}

/// Puts `values` (flat, by path) into a clone of `template`, checking that both models agree.
fn load<X: Backend, M: Module<X>>(
    template: &M,
    weights: &Weights<impl Backend>,
    values: HashMap<String, Tensor<X, 1>>,
) -> Result<M> {
    let mut mapper = Load {
        weights_shapes: weights
            .params
            .iter()
            .map(|p| (p.path.clone(), p.shape.clone()))
            .collect(),
        values,
        loaded: HashSet::new(),
        error: None,
    };
    let model = map_named(template.clone(), &mut mapper);
    if let Some(err) = mapper.error {
        return Err(err);
    }
    if let Some(missing) = weights.paths().find(|p| !mapper.loaded.contains(*p)) {
        return Err(HessianError::MissingParam {
            path: missing.to_string(),
        });
    }
    Ok(model)
}

struct Load<X: Backend> {
    weights_shapes: HashMap<String, Vec<usize>>,
    values: HashMap<String, Tensor<X, 1>>,
    loaded: HashSet<String>,
    error: Option<HessianError>,
}

impl<X: Backend> NamedMapper<X> for Load<X> {
    fn map_named<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<X, D>>,
    ) -> Param<Tensor<X, D>> {
        let path = path.to_string();
        let found = param.lazy_shape().dims::<D>().to_vec();
        let (Some(value), Some(expected)) =
            (self.values.remove(&path), self.weights_shapes.get(&path))
        else {
            self.error.get_or_insert(HessianError::ExtraParam { path });
            return param;
        };
        if *expected != found {
            self.error.get_or_insert(HessianError::ShapeMismatch {
                path,
                expected: expected.clone(),
                found,
            });
            return param;
        }
        let mut dims = [0; D];
        dims.copy_from_slice(&found);
        self.loaded.insert(path);
        Param::initialized(param.id, value.reshape(dims))
    }
}

/// burn 0.21 modules whose backward burn's autodiff cannot differentiate (it panics with "Can't
/// differentiate …"), with the op named in that message.
const FIRST_ORDER_MODULES: &[(&str, &str)] = &[
    ("Struct:Linear", "linear_x_backward"),
    ("Struct:Embedding", "embedding backward"),
    ("Struct:DeformConv2d", "deform conv 2d backward"),
];

/// Why exact products cannot work on `model`, found from its modules without running it: the
/// first parameter inside one of [`FIRST_ORDER_MODULES`].
fn first_order_only<B: Backend, M: Module<B>>(model: &M) -> Option<String> {
    struct Check {
        path: Vec<String>,
        found: Option<String>,
    }
    impl<B: Backend> ModuleVisitor<B> for Check {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push(name.to_string());
            if self.found.is_none()
                && let Some((module, op)) = FIRST_ORDER_MODULES
                    .iter()
                    .find(|(t, _)| *t == container_type)
            {
                let module = module.trim_start_matches("Struct:");
                self.found = Some(format!(
                    "`{}` is in a burn `{module}`, and burn cannot differentiate {op}",
                    self.path.join(".")
                ));
            }
        }

        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
    }
    let mut check = Check {
        path: Vec::new(),
        found: None,
    };
    model.visit(&mut check);
    check.found
}

struct Collect<B: Backend> {
    params: Vec<Weight<B>>,
}

impl<B: Backend> NamedVisitor<B> for Collect<B> {
    fn visit_named<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let shape = value.dims().to_vec();
        let numel: usize = shape.iter().product();
        self.params.push(Weight {
            path: path.to_string(),
            shape,
            value: value.reshape([numel]),
        });
    }
}

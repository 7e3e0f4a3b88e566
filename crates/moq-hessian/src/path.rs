//! How a parameter is named: its module path, the field names from the root joined by `.`
//! (`encoder.layers.0.ffn.weight`), as burn's module derive reports them. This is the contract
//! between `moq-burn` (which selects, schedules and exports parameters by path) and this crate
//! (which loads weights into a model built on another backend by path), so both walk modules
//! through the two adapters here.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::nn::{Linear, LinearConfig};
//! use moq_hessian::path::float_params;
//!
//! let model: Linear<NdArray> = LinearConfig::new(3, 2).init(&Default::default());
//! let paths: Vec<String> = float_params(&model).into_iter().map(|p| p.path).collect();
//! assert_eq!(paths, ["weight", "bias"]);
//! ```

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// Visits every float parameter with its path.
pub trait NamedVisitor<B: Backend> {
    /// Called for each float parameter, in module order.
    fn visit_named<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>);
}

/// Maps every float parameter, knowing its path.
pub trait NamedMapper<B: Backend> {
    /// Called for each float parameter, in module order; returns its replacement.
    fn map_named<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>>;
}

/// Runs `visitor` over the float parameters of `module`.
pub fn visit_named<B: Backend, M: Module<B>>(module: &M, visitor: &mut impl NamedVisitor<B>) {
    module.visit(&mut Named {
        path: Vec::new(),
        inner: visitor,
    });
}

/// Runs `mapper` over the float parameters of `module`.
pub fn map_named<B: Backend, M: Module<B>>(module: M, mapper: &mut impl NamedMapper<B>) -> M {
    module.map(&mut Named {
        path: Vec::new(),
        inner: mapper,
    })
}

/// A float parameter: its id, path and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedParam {
    /// burn's parameter id.
    pub id: ParamId,
    /// Module path.
    pub path: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// Every float parameter of `module`, in module order.
pub fn float_params<B: Backend, M: Module<B>>(module: &M) -> Vec<NamedParam> {
    struct Find(Vec<NamedParam>);
    impl<B: Backend> NamedVisitor<B> for Find {
        fn visit_named<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            self.0.push(NamedParam {
                id: param.id,
                path: path.to_string(),
                shape: param.lazy_shape().dims::<D>().to_vec(),
            });
        }
    }
    let mut find = Find(Vec::new());
    visit_named(module, &mut find);
    find.0
}

/// The adapter: tracks the path through `enter_module`/`exit_module`.
struct Named<'a, V> {
    path: Vec<String>,
    inner: &'a mut V,
}

impl<B: Backend, V: NamedVisitor<B>> ModuleVisitor<B> for Named<'_, V> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.inner.visit_named(&self.path.join("."), param);
    }
}

impl<B: Backend, V: NamedMapper<B>> ModuleMapper<B> for Named<'_, V> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.inner.map_named(&self.path.join("."), param)
    }
}

//! [`MoqWeight`]: the weight of a [`super::MoqLinear`], a float parameter while training and
//! packed codes once an export is served.
//!
//! Its `Module` impl is written by hand because loading must change what the weight *is*,
//! which burn's derived `map` cannot: a `ModuleMapper` only replaces parameter tensors. So the
//! loader ([`super::load_codes`]) maps the float weight as usual and leaves the packed weight for
//! its parameter id in [`super::pending`]; the weight's `map` takes it from there. Everything
//! else is what a `Param<Tensor<B, 2>>` does: the record *is* a `Param<Tensor<B, 2>>` (so a
//! burn `Linear` checkpoint loads, with any recorder), and visitors and mappers see the one
//! float parameter while training.
//!
//! A packed weight multiplies with the low-bit matmul of the backend it was loaded on:
//! [`super::load_codes`] (which needs [`crate::MoqBackend`]) stores `B::quantized_matmul` in it,
//! so `MoqLinear::forward` needs only `B: Backend`, the bound the user's own generic model code
//! has. Moved to another backend type ([`AutodiffModule::valid`], `from_inner`) it multiplies
//! with [`quantized_matmul_tensor_ops`] (dequantize with tensor ops, then multiply): serve on
//! the backend you load on.
//!
//! A packed weight shows visitors and mappers its parts (`weight.words`, `weight.scales`,
//! `weight.zero_points`: the codes in `i32` words, the scales, the zero points; a
//! [`PackedWeight`]), and its record
//! is the dequantized float weight, so saving a served model with burn's recorders writes the
//! model a `Linear` would load. Loading a record always gives a float weight.

use burn::module::{
    AutodiffModule, Content, Devices, HasAutodiffModule, Module, ModuleDisplay,
    ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param, ParamId,
};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::backend::{Matmul, PackedWeight, quantized_matmul_tensor_ops};

/// The weight `[d_input, d_output]` of a [`super::MoqLinear`].
#[derive(Clone, Debug)]
pub enum MoqWeight<B: Backend> {
    /// A float parameter: training, or a width served dequantized.
    Float(Param<Tensor<B, 2>>),
    /// Packed codes with per-group scales (bias held by the `MoqLinear`), multiplied by
    /// [`crate::MoqBackend::quantized_matmul`].
    Packed {
        /// The id of the float parameter it replaced, kept for the record.
        id: ParamId,
        /// Codes, scales and zero points.
        weight: Box<PackedWeight<B>>,
        /// The matmul that multiplies with them.
        matmul: Matmul<B>,
    },
}

impl<B: Backend> MoqWeight<B> {
    /// The packed weight, if the weight holds codes.
    pub fn packed(&self) -> Option<&PackedWeight<B>> {
        match self {
            Self::Float(_) => None,
            Self::Packed { weight, .. } => Some(weight.as_ref()),
        }
    }

    /// The weight's values: the parameter, or the codes dequantized (tensor ops).
    pub fn val(&self) -> Tensor<B, 2> {
        match self {
            Self::Float(p) => p.val(),
            Self::Packed { weight, .. } => weight.dequantize(),
        }
    }

    /// The device the weight is on.
    pub fn device(&self) -> B::Device {
        match self {
            Self::Float(p) => p.lazy_device(),
            Self::Packed { weight, .. } => weight.device(),
        }
    }

    /// The same weight with its float parameter or its packed weight mapped (same backend).
    fn map_parts(
        self,
        float: impl FnOnce(Param<Tensor<B, 2>>) -> Param<Tensor<B, 2>>,
        packed: impl FnOnce(PackedWeight<B>) -> PackedWeight<B>,
    ) -> Self {
        match self {
            Self::Float(p) => Self::Float(float(p)),
            Self::Packed { id, weight, matmul } => Self::Packed {
                id,
                weight: Box::new(packed(*weight)),
                matmul,
            },
        }
    }

    /// The parameter id (of the float weight the codes replaced, when packed).
    pub fn id(&self) -> ParamId {
        match self {
            Self::Float(p) => p.id,
            Self::Packed { id, .. } => *id,
        }
    }
}

impl<B: Backend> Module<B> for MoqWeight<B> {
    type Record = Param<Tensor<B, 2>>;

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        match self {
            Self::Float(p) => p.visit(visitor),
            Self::Packed { weight, .. } => weight.visit(visitor),
        }
    }

    fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
        match self {
            Self::Float(p) => {
                let p = Module::map(p, mapper);
                match super::pending::take::<B>(p.id) {
                    Some((weight, matmul)) => Self::Packed {
                        id: p.id,
                        weight: Box::new(weight),
                        matmul,
                    },
                    None => Self::Float(p),
                }
            }
            Self::Packed { id, weight, matmul } => Self::Packed {
                id,
                weight: Box::new(weight.map(mapper)),
                matmul,
            },
        }
    }

    fn load_record(self, record: Self::Record) -> Self {
        match self {
            Self::Float(p) => Self::Float(p.load_record(record)),
            Self::Packed { .. } => {
                let (id, tensor, _) = record.consume();
                Self::Float(Param::initialized(id, tensor))
            }
        }
    }

    fn into_record(self) -> Self::Record {
        match self {
            Self::Float(p) => p.into_record(),
            packed @ Self::Packed { .. } => {
                let value = packed.val();
                Param::initialized(packed.id(), value)
            }
        }
    }

    fn to_device(self, device: &B::Device) -> Self {
        self.map_parts(|p| Module::to_device(p, device), |l| l.to_device(device))
    }

    fn fork(self, device: &B::Device) -> Self {
        self.map_parts(|p| Module::fork(p, device), |l| l.fork(device))
    }

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        match self {
            Self::Float(p) => p.collect_devices(devices),
            Self::Packed { weight, .. } => weight.collect_devices(devices),
        }
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for MoqWeight<B> {
    type InnerModule = MoqWeight<B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        match self {
            Self::Float(p) => MoqWeight::Float(p.valid()),
            Self::Packed { id, weight, .. } => MoqWeight::Packed {
                id: *id,
                weight: Box::new(weight.valid()),
                matmul: quantized_matmul_tensor_ops::<B::InnerBackend>,
            },
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        match module {
            MoqWeight::Float(p) => Self::Float(Param::from_inner(p)),
            MoqWeight::Packed { id, weight, .. } => Self::Packed {
                id,
                weight: Box::new(PackedWeight::from_inner(*weight)),
                matmul: quantized_matmul_tensor_ops::<B>,
            },
        }
    }
}

impl<B: AutodiffBackend> HasAutodiffModule<B> for MoqWeight<B::InnerBackend> {
    type TrainModule = MoqWeight<B>;
}

impl<B: Backend> ModuleDisplayDefault for MoqWeight<B> {
    fn content(&self, content: Content) -> Option<Content> {
        match self {
            Self::Float(p) => p.content(content),
            Self::Packed { weight, .. } => {
                let shape = weight.shape();
                content
                    .add_formatted(&format!(
                        "Packed {{bits: {}, d_output: {}, asymmetric: {}}}",
                        shape.bits,
                        shape.row_len,
                        shape.quant_type == moq_core::QuantType::Asymmetric
                    ))
                    .optional()
            }
        }
    }
}

impl<B: Backend> ModuleDisplay for MoqWeight<B> {}

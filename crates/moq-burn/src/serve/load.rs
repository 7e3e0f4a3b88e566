//! Loading an export into the user's own model: [`load_codes`] (path 2, packed codes in
//! [`super::MoqLinear`] layers), [`load_burn_quantized`] (path 1, burn's own quantized
//! tensors in any model) and [`crate::load_dequantized`] (every tensor as float), all one
//! mapper over the model's parameters by module path.

use std::collections::{HashMap, HashSet};

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moq_core::KERNEL_BITS;
use moq_core::export::{Exported, MoqFile};
use moq_hessian::path::{NamedMapper, map_named};

use super::burn_quant::{burn_scheme, to_burn_data};
use super::pending;
use super::report::{Held, LoadReport, LoadedTensor};
use crate::backend::{Activations, Matmul, MoqBackend, PackedWeight};
use crate::error::{MoqBurnError, Result};

/// What a load does with a quantized tensor it cannot serve as asked (a width or grouping
/// without a kernel or burn scheme, or a weight whose module is not a `MoqLinear`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unservable {
    /// Load it dequantized into its float parameter (the report says so, and why).
    Dequantize,
    /// Return an error naming it and why.
    Refuse,
}

/// `model` (of the type it was trained as) with the export `file` in it: every weight of a
/// [`super::MoqLinear`] held as packed codes and multiplied by the low-bit matmul, every other
/// parameter as float. A quantized tensor that cannot be served so (wider than 8 bits, not 2-d,
/// or its module is not a `MoqLinear`) is dequantized or refused as `unservable` says; the
/// report says per tensor what happened. A tensor the model lacks, a parameter the file lacks,
/// or a shape that differs is an error naming the tensor, and `model` is then left as it was
/// (the load works on a clone, which shares the parameters' storage, and replaces `model`
/// only when every tensor is in).
pub fn load_codes<B: MoqBackend, M: Module<B>>(
    model: &mut M,
    file: &MoqFile,
    unservable: Unservable,
) -> Result<LoadReport> {
    load_codes_with(model, file, unservable, Activations::F32)
}

/// [`load_codes`] with the activations the CPU low-bit matmul takes: with
/// [`Activations::Int8`], on a backend that runs it ([`MoqBackend::int8_activations`]: NdArray),
/// each weight's codes are also repacked into the int8 kernel's tiles (a second copy of the
/// codes, counted in the report's bytes), and its matmul rounds the activations to int8 per
/// block of 32 inputs (about 0.5% error, faster) for inputs of up to
/// [`moq_core::matmul::INT8_MAX_ROWS`] rows; larger inputs take the exact f32 path. A weight
/// whose groups split the kernel's tiles of 8 columns, or any weight on another backend, keeps
/// f32 activations; the report says per tensor which it has ([`Held::Codes`]).
pub fn load_codes_with<B: MoqBackend, M: Module<B>>(
    model: &mut M,
    file: &MoqFile,
    unservable: Unservable,
    activations: Activations,
) -> Result<LoadReport> {
    let codes = Codes {
        matmul: B::quantized_matmul,
        prepare: |w, activations| match w.clone().with_activations(activations) {
            Ok(w) => w,
            // Groups that split the kernel's tiles: this weight keeps f32 activations.
            Err(_) => w,
        },
        activations,
    };
    replace_on_success(model, |m| load(m, file, Mode::Codes(codes), unservable))
}

/// `model` with the export `file` in it, each quantized weight that burn can hold put in as
/// burn's own quantized tensor ([`to_burn_data`]: symmetric, 8 or 4 bits as the backend
/// loads them ([`MoqBackend::burn_quantized_bits`]), groups that are burn blocks), every other
/// parameter as float: the model then runs through burn's quantized matmul with no change to
/// its code. Other quantized tensors are dequantized or refused as `unservable` says; the
/// report says per tensor what happened. Errors as [`load_codes`], leaving `model` as it was.
pub fn load_burn_quantized<B: MoqBackend, M: Module<B>>(
    model: &mut M,
    file: &MoqFile,
    unservable: Unservable,
) -> Result<LoadReport> {
    replace_on_success(model, |m| {
        load(m, file, Mode::Burn(B::burn_quantized_bits()), unservable)
    })
}

/// Runs `load` on a clone of `model` and puts the result in `model` only if it succeeds.
fn replace_on_success<M: Clone>(
    model: &mut M,
    load: impl FnOnce(M) -> Result<(M, LoadReport)>,
) -> Result<LoadReport> {
    let (loaded, report) = load(model.clone())?;
    *model = loaded;
    Ok(report)
}

/// `model` with every float parameter replaced by its value in `file` (quantized tensors are
/// dequantized), matched by module path. A parameter missing from the file, a tensor of the file
/// the model does not have, or a shape that differs is an error naming the tensor.
pub fn load_dequantized<B: Backend, M: Module<B>>(model: M, file: &MoqFile) -> Result<M> {
    load(model, file, Mode::Dequantized, Unservable::Dequantize).map(|(model, _)| model)
}

enum Mode<B: Backend> {
    /// Packed codes in `MoqLinear`s.
    Codes(Codes<B>),
    /// burn's quantized tensors at these widths.
    Burn(&'static [u32]),
    Dequantized,
}

/// How packed codes are served: the matmul, and the weight prepared for the activations asked
/// for ([`PackedWeight::with_activations`], which needs the [`MoqBackend`] bound the loader
/// does not have).
struct Codes<B: Backend> {
    matmul: Matmul<B>,
    prepare: fn(PackedWeight<B>, Activations) -> PackedWeight<B>,
    activations: Activations,
}

impl<B: Backend> Clone for Codes<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Codes<B> {}

impl<B: Backend> Clone for Mode<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Mode<B> {}

fn load<B: Backend, M: Module<B>>(
    model: M,
    file: &MoqFile,
    mode: Mode<B>,
    unservable: Unservable,
) -> Result<(M, LoadReport)> {
    let scope = pending::Scope;
    let mut loader = Loader::new(file, mode, unservable);
    let model = map_named(model, &mut loader);
    if let Some(err) = loader.error {
        return Err(err);
    }
    if let Some(name) = loader.unused().into_iter().min() {
        return Err(MoqBurnError::Export {
            reason: format!("the file has a tensor `{name}` that the model does not"),
        });
    }
    // Codes that no `MoqWeight` took: their module is another type.
    let left: HashSet<ParamId> = scope.left().into_iter().collect();
    drop(scope);
    let untaken: HashSet<String> = loader
        .waiting
        .iter()
        .filter(|(id, _)| left.contains(id))
        .map(|(_, name)| name.clone())
        .collect();
    let mut report = loader.report;
    let model = if untaken.is_empty() {
        model
    } else {
        let reason = "its module is not a MoqLinear";
        if unservable == Unservable::Refuse {
            let name = untaken.iter().min().cloned().unwrap_or_default();
            return Err(MoqBurnError::Export {
                reason: format!("`{name}`: {reason}, so its codes cannot be served"),
            });
        }
        let mut again = Loader::new(file, Mode::Dequantized, unservable);
        again.only = Some(untaken);
        let model = map_named(model, &mut again);
        if let Some(err) = again.error {
            return Err(err);
        }
        for t in again.report {
            if let Some(r) = report.iter_mut().find(|r| r.name == t.name) {
                *r = LoadedTensor {
                    held: Held::Dequantized {
                        reason: reason.into(),
                    },
                    ..t
                };
            }
        }
        model
    };
    let order: HashMap<&str, usize> = file
        .quantized
        .iter()
        .map(|e| e.name.as_str())
        .chain(file.float.iter().map(|(n, _, _)| n.as_str()))
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect();
    report.sort_by_key(|t| order.get(t.name.as_str()).copied());
    Ok((model, LoadReport { tensors: report }))
}

/// The report's line of tensor `path` of `shape`.
fn loaded(
    path: &str,
    shape: &[usize],
    held: Held,
    bits: Option<u32>,
    device_bytes: usize,
) -> LoadedTensor {
    LoadedTensor {
        name: path.to_string(),
        shape: shape.to_vec(),
        bits,
        held,
        device_bytes,
    }
}

/// A tensor of the file.
enum Source<'a> {
    Quantized(&'a Exported),
    Float(&'a [usize], &'a [f32]),
}

struct Loader<'a, B: Backend> {
    sources: HashMap<&'a str, Source<'a>>,
    /// Only these paths (the second pass); all when `None`.
    only: Option<HashSet<String>>,
    seen: HashSet<String>,
    mode: Mode<B>,
    unservable: Unservable,
    /// Codes left in the hand-over: parameter id and tensor name.
    waiting: Vec<(ParamId, String)>,
    report: Vec<LoadedTensor>,
    error: Option<MoqBurnError>,
}

impl<'a, B: Backend> Loader<'a, B> {
    fn new(file: &'a MoqFile, mode: Mode<B>, unservable: Unservable) -> Self {
        let mut sources: HashMap<&str, Source<'_>> = HashMap::new();
        for e in &file.quantized {
            sources.insert(&e.name, Source::Quantized(e));
        }
        for (name, shape, values) in &file.float {
            sources.insert(name, Source::Float(shape, values));
        }
        Self {
            sources,
            only: None,
            seen: HashSet::new(),
            mode,
            unservable,
            waiting: Vec::new(),
            report: Vec::new(),
            error: None,
        }
    }

    fn unused(&self) -> Vec<&str> {
        self.sources
            .keys()
            .filter(|n| !self.seen.contains(**n))
            .copied()
            .collect()
    }

    /// The float value of `path` and how it is held, or the value to serve some other way.
    fn value<const D: usize>(
        &mut self,
        path: &str,
        param: &Param<Tensor<B, D>>,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, D>, LoadedTensor)>> {
        let expected = param.lazy_shape().dims::<D>().to_vec();
        let Some(source) = self.sources.get(path) else {
            return Err(MoqBurnError::Export {
                reason: format!("the file has no tensor `{path}`"),
            });
        };
        let shape = match source {
            Source::Quantized(e) => &e.shape[..],
            Source::Float(shape, _) => shape,
        };
        if shape != expected.as_slice() {
            return Err(MoqBurnError::Export {
                reason: format!("`{path}`: the file has shape {shape:?}, the model {expected:?}"),
            });
        }
        match *source {
            Source::Float(shape, values) => {
                let data = TensorData::new(values.to_vec(), shape.to_vec());
                let bytes = values.len() * size_of::<B::FloatElem>();
                let held = loaded(path, &expected, Held::Float, None, bytes);
                Ok(Some((Tensor::from_data(data, device), held)))
            }
            Source::Quantized(e) => self.quantized(path, param.id, e, device),
        }
    }

    /// The quantized tensor `e` for parameter `id`: left as codes for its `MoqWeight` (then
    /// `None`), as burn's quantized tensor, or dequantized, as the mode and the policy say.
    fn quantized<const D: usize>(
        &mut self,
        path: &str,
        id: ParamId,
        e: &Exported,
        device: &B::Device,
    ) -> Result<Option<(Tensor<B, D>, LoadedTensor)>> {
        let float_bytes = size_of::<B::FloatElem>();
        let bits = e.packed.bits;
        let policy = self.unservable;
        let unservable = |reason: String| -> Result<Held> {
            match policy {
                Unservable::Dequantize => Ok(Held::Dequantized { reason }),
                Unservable::Refuse => Err(MoqBurnError::Export {
                    reason: format!("`{path}`: {reason}, so it cannot be served as asked"),
                }),
            }
        };
        let held = match self.mode {
            Mode::Dequantized => Held::Dequantized {
                reason: "loaded as float".into(),
            },
            Mode::Codes(_) if !KERNEL_BITS.contains(&bits) => unservable(format!(
                "{bits}-bit codes: the low-bit matmuls multiply 1 to 8 bits"
            ))?,
            Mode::Codes(_) if D != 2 => {
                unservable(format!("a {D}-d tensor: codes serve 2-d linear weights"))?
            }
            Mode::Codes(codes) => {
                let weight = PackedWeight::<B>::from_export(e, device)?;
                let weight = (codes.prepare)(weight, codes.activations);
                let tiles = weight.int8().map_or(0, |l| l.tiles().bytes());
                let bytes = weight.shape().device_bytes(float_bytes) + tiles;
                let activations = weight.activations();
                pending::put(id, weight, codes.matmul);
                self.waiting.push((id, path.to_string()));
                let held = Held::Codes { activations };
                self.report
                    .push(loaded(path, &e.shape, held, Some(bits), bytes));
                return Ok(None);
            }
            // The layouts are compared first (cheap); the codes are converted only to be held.
            Mode::Burn(widths) => match burn_scheme(&e.packed, &e.shape) {
                Err(err) => unservable(err.to_string())?,
                Ok(_) if !widths.contains(&bits) => unservable(format!(
                    "{bits}-bit codes: this backend loads burn's quantized tensors at {widths:?} \
                     bits"
                ))?,
                Ok(_) => {
                    let data = to_burn_data(&e.packed, &e.shape)?;
                    let bytes = data.bytes.len();
                    let held = loaded(path, &e.shape, Held::BurnQuantized, Some(bits), bytes);
                    return Ok(Some((Tensor::from_data(data, device), held)));
                }
            },
        };
        let q = moq_core::unpack(&e.packed)?;
        let mut v = vec![0.0f32; e.packed.len];
        moq_core::dequantize(&q, &mut v)?;
        let data = TensorData::new(v, e.shape.clone());
        let held = loaded(path, &e.shape, held, Some(bits), e.packed.len * float_bytes);
        Ok(Some((Tensor::from_data(data, device), held)))
    }
}

impl<B: Backend> NamedMapper<B> for Loader<'_, B> {
    fn map_named<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        if self.error.is_some() || self.only.as_ref().is_some_and(|o| !o.contains(path)) {
            self.seen.insert(path.to_string());
            return param;
        }
        self.seen.insert(path.to_string());
        let device = param.lazy_device();
        match self.value(path, &param, &device) {
            Err(err) => {
                self.error = Some(err);
                param
            }
            // Codes left for the `MoqWeight`, which replaces the parameter.
            Ok(None) => param,
            Ok(Some((value, loaded))) => {
                let float = matches!(loaded.held, Held::Float | Held::Dequantized { .. });
                self.report.push(loaded);
                let (id, tensor, mapper) = param.consume();
                let value = value.set_require_grad(float && tensor.is_require_grad());
                Param::from_mapped_value(id, value, mapper)
            }
        }
    }
}

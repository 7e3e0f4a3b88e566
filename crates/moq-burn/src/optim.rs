//! The MoQ optimizer wrapper (DESIGN.md section 3, "Where it runs").
//!
//! [`MoqOptimizer`] wraps any burn [`Optimizer`] and is one itself, so it drops into a
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

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use moq_core::export::{Exported, MoqFile};
use moq_core::{CodeLayout, LayerSpec, NoiseKey, QuantSpec, QuantizeConfig, ScaleFormat, Schedule};
use serde::{Deserialize, Serialize};

use crate::backend::{MoqBackend, fake_quantize};
use crate::error::{MoqBurnError, Result};
use crate::select::PathPattern;

/// Sets up MoQ for a model: the config, which parameters are quantized, how they form layers.
///
/// By default every float parameter of rank ≥ 2 is quantized (weights, not biases or norms),
/// and each is its own layer. Every pattern given must match at least one parameter.
#[derive(Clone, Debug)]
pub struct Moq {
    config: QuantizeConfig,
    include: Vec<String>,
    exclude: Vec<String>,
    min_rank: usize,
    layers: Option<String>,
    bit_groups: Vec<(String, u32, u32)>,
    seed: u64,
}

impl Moq {
    /// Starts from a validated config (from DeepSpeed JSON or the builder).
    pub fn new(config: QuantizeConfig) -> Self {
        Self {
            config,
            include: Vec::new(),
            exclude: Vec::new(),
            min_rank: 2,
            layers: None,
            bit_groups: Vec::new(),
            seed: 0,
        }
    }

    /// Quantizes only parameters under this module-path pattern (may be given several times);
    /// see [`crate::select`] for the syntax.
    pub fn include(mut self, pattern: &str) -> Self {
        self.include.push(pattern.to_string());
        self
    }

    /// Leaves parameters under this pattern in full precision.
    pub fn exclude(mut self, pattern: &str) -> Self {
        self.exclude.push(pattern.to_string());
        self
    }

    /// Smallest rank quantized (default 2; 1 also quantizes biases and norm weights).
    pub fn min_rank(mut self, rank: usize) -> Self {
        self.min_rank = rank;
        self
    }

    /// Groups parameters into layers that share a schedule and an eigenvalue: the
    /// burn spelling of DeepSpeed's `layer_name` + `layer_num`, e.g. `encoder.layers.{i}`.
    /// Quantized parameters outside the pattern are each their own layer.
    pub fn layers(mut self, pattern: &str) -> Self {
        self.layers = Some(pattern.to_string());
        self
    }

    /// Gives parameters under `pattern` their own start and target bits (DeepSpeed's
    /// `different_groups`); the first matching group wins.
    pub fn bits_for(mut self, pattern: &str, start_bits: u32, target_bits: u32) -> Self {
        self.bit_groups
            .push((pattern.to_string(), start_bits, target_bits));
        self
    }

    /// Seed of stochastic rounding (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Wraps `optimizer` for `model`: finds the parameters to quantize, checks every pattern
    /// and every parameter's group count now rather than at the first quantizing step.
    pub fn init<O, M, B>(self, optimizer: O, model: &M) -> Result<MoqOptimizer<O, M, B>>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend,
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
    {
        self.config.validate()?;
        let mut finder = ParamFinder {
            path: Vec::new(),
            found: Vec::new(),
        };
        model.visit(&mut finder);
        let found = finder.found;
        let example = found.first().map_or_else(
            || "(the model has no float parameter)".to_string(),
            |p| p.path.clone(),
        );
        let parse_all = |patterns: &[String], role: &'static str| -> Result<Vec<PathPattern>> {
            patterns
                .iter()
                .map(|p| {
                    let pattern = PathPattern::parse(p, false)?;
                    if !found.iter().any(|f| pattern.matches(&f.path)) {
                        return Err(MoqBurnError::NoMatch {
                            pattern: p.clone(),
                            role,
                            example: example.clone(),
                        });
                    }
                    Ok(pattern)
                })
                .collect()
        };
        let include = parse_all(&self.include, "include")?;
        let exclude = parse_all(&self.exclude, "exclude")?;
        let group_patterns: Vec<String> = self.bit_groups.iter().map(|g| g.0.clone()).collect();
        let groups = parse_all(&group_patterns, "bits_for")?;
        let layer_pattern = match &self.layers {
            Some(p) => {
                let pattern = PathPattern::parse(p, true)?;
                if !found.iter().any(|f| pattern.matches(&f.path)) {
                    return Err(MoqBurnError::NoMatch {
                        pattern: p.clone(),
                        role: "layers",
                        example,
                    });
                }
                Some(pattern)
            }
            None => None,
        };

        let selected: Vec<&Found> = found
            .iter()
            .filter(|f| f.shape.len() >= self.min_rank)
            .filter(|f| include.is_empty() || include.iter().any(|p| p.matches(&f.path)))
            .filter(|f| !exclude.iter().any(|p| p.matches(&f.path)))
            .collect();
        if selected.is_empty() {
            return Err(MoqBurnError::NothingSelected {
                params: found.len(),
            });
        }

        // Layers: pattern layers by index first, then one layer per remaining parameter.
        let mut layer_of_index: Vec<usize> = selected
            .iter()
            .filter_map(|f| layer_pattern.as_ref().and_then(|p| p.capture(&f.path)))
            .collect();
        layer_of_index.sort_unstable();
        layer_of_index.dedup();
        let mut layers: Vec<MoqLayer> = layer_of_index
            .iter()
            .map(|i| MoqLayer {
                name: layer_pattern
                    .as_ref()
                    .map_or(String::new(), |p| p.as_str().replace("{i}", &i.to_string())),
                spec: LayerSpec::from_config(&self.config),
                params: Vec::new(),
            })
            .collect();
        let base = QuantSpec::from_config(&self.config, self.config.start_bits);
        let mut params = Vec::with_capacity(selected.len());
        for (stream, f) in selected.iter().enumerate() {
            let numel: usize = f.shape.iter().product();
            base.check(&f.path, numel)?;
            let layer = match layer_pattern.as_ref().and_then(|p| p.capture(&f.path)) {
                Some(i) => layer_of_index
                    .binary_search(&i)
                    .expect("index collected above"),
                None => {
                    layers.push(MoqLayer {
                        name: f.path.clone(),
                        spec: LayerSpec::from_config(&self.config),
                        params: Vec::new(),
                    });
                    layers.len() - 1
                }
            };
            let spec = match groups.iter().position(|g| g.matches(&f.path)) {
                Some(g) => {
                    let (_, start_bits, target_bits) = self.bit_groups[g];
                    LayerSpec {
                        start_bits,
                        target_bits,
                        period: self.config.period,
                    }
                }
                None => LayerSpec::from_config(&self.config),
            };
            let entry = &mut layers[layer];
            if entry.params.is_empty() {
                entry.spec = spec;
            } else if entry.spec != spec {
                return Err(MoqBurnError::BadPattern {
                    pattern: group_patterns.join(", "),
                    reason: format!(
                        "layer `{}` has parameters in different bit groups",
                        entry.name
                    ),
                });
            }
            entry.params.push(f.path.clone());
            params.push(QuantParam {
                id: f.id,
                path: f.path.clone(),
                shape: f.shape.clone(),
                layer,
                stream: stream as u64,
            });
        }
        let schedule =
            Schedule::with_layers(&self.config, layers.iter().map(|l| l.spec).collect())?;
        Ok(MoqOptimizer {
            inner: optimizer,
            config: self.config,
            seed: self.seed,
            params: Arc::new(params),
            layers: Arc::new(layers),
            index: HashMap::new(),
            masters: HashMap::new(),
            schedule,
            skipped_steps: 0,
            eigenvalues: None,
            last_error: Arc::new(Mutex::new(None)),
            status: MoqStatus::default(),
            _types: PhantomData,
        }
        .indexed())
    }
}

/// A layer: parameters that share one schedule state.
#[derive(Clone, Debug, PartialEq)]
pub struct MoqLayer {
    /// The layer's name: the layer pattern with its index, or the parameter's path.
    pub name: String,
    /// Start, target and period.
    pub spec: LayerSpec,
    /// Paths of its parameters.
    pub params: Vec<String>,
}

/// Supplies normalized per-layer eigenvalues (in `[0, 1]`, in [`MoqOptimizer::layers`] order)
/// when the schedule needs them. [`crate::HessianProvider`] computes them from the model's
/// Hessian; [`FixedEigenvalues`] replays known ones.
///
/// The wrapper asks at every `gas_boundary_resolution`-th step after which some layer will lose
/// a bit before the next such step. An eigenvalue only matters at a drop (it sets the period
/// after it), so this gives exactly the schedule of DeepSpeed's rule (ask at every such step
/// while a layer is above its target) at a fraction of the cost.
pub trait EigenvalueProvider<M>: Send {
    /// The eigenvalues at this point of training, or `None` to keep the previous ones. An
    /// error is reported through [`MoqOptimizer::take_error`] and the previous values stay.
    fn eigenvalues(&mut self, model: &M, layers: &[MoqLayer]) -> Result<Option<Vec<f32>>>;

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

#[derive(Clone, Debug)]
struct QuantParam {
    id: ParamId,
    path: String,
    shape: Vec<usize>,
    layer: usize,
    stream: u64,
}

type SharedProvider<M> = Arc<Mutex<dyn EigenvalueProvider<M>>>;

/// The MoQ optimizer: an [`Optimizer`] wrapping another one. Built by [`Moq::init`].
///
/// The full-precision masters live here, not in the model: after the first step the model holds
/// quantized weights, and each step starts from the masters. To continue a saved run, load the
/// model's record *and* this optimizer's record; weights loaded into the model alone are
/// overwritten by the masters at the next step (build a new optimizer to start from them).
pub struct MoqOptimizer<O, M, B: AutodiffBackend> {
    inner: O,
    config: QuantizeConfig,
    seed: u64,
    params: Arc<Vec<QuantParam>>,
    layers: Arc<Vec<MoqLayer>>,
    index: HashMap<ParamId, usize>,
    /// Full-precision masters, flattened.
    masters: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    schedule: Schedule,
    skipped_steps: u64,
    eigenvalues: Option<SharedProvider<M>>,
    last_error: Arc<Mutex<Option<MoqBurnError>>>,
    status: MoqStatus,
    _types: PhantomData<fn() -> (M, B)>,
}

/// A live view of a [`MoqOptimizer`]'s schedule, updated after every step. Take it with
/// [`MoqOptimizer::status`] before handing the optimizer to burn-train's `Learner`, and read it
/// from a metric or a progress display while training runs. It also keeps the snapshots of the
/// last [`MoqStatus::HISTORY`] steps, for readers that lag behind training (burn-train processes
/// metrics on another thread).
#[derive(Clone, Debug, Default)]
pub struct MoqStatus {
    inner: Arc<Mutex<VecDeque<StatusSnapshot>>>,
}

/// What [`MoqStatus`] reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatusSnapshot {
    /// Optimizer steps taken (skipped steps not included).
    pub steps: u64,
    /// Steps skipped for non-finite gradients.
    pub skipped_steps: u64,
    /// Bits of each layer (`None` before the first quantizing step).
    pub bits: Vec<Option<u32>>,
    /// Mixing ratio `ρ` of each layer (0 when mixing is off).
    pub mix_ratios: Vec<f32>,
}

impl MoqStatus {
    /// How many past snapshots are kept.
    pub const HISTORY: usize = 4096;

    /// The state after the latest step.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.inner
            .lock()
            .ok()
            .and_then(|h| h.back().cloned())
            .unwrap_or_default()
    }

    /// The state right after the `calls`-th call of `step` (taken or skipped, counted from 1),
    /// if it is among the last [`MoqStatus::HISTORY`].
    pub fn snapshot_after(&self, calls: u64) -> Option<StatusSnapshot> {
        let history = self.inner.lock().ok()?;
        history
            .iter()
            .rev()
            .find(|s| s.steps + s.skipped_steps == calls)
            .cloned()
    }

    fn update(&self, snapshot: StatusSnapshot) {
        if let Ok(mut history) = self.inner.lock() {
            if history.len() == Self::HISTORY {
                history.pop_front();
            }
            history.push_back(snapshot);
        }
    }
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
            _types: PhantomData,
        }
    }
}

impl<O, M, B: AutodiffBackend> MoqOptimizer<O, M, B> {
    fn indexed(mut self) -> Self {
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

    fn publish_status(&self) {
        self.status.update(StatusSnapshot {
            steps: self.schedule.steps_taken(),
            skipped_steps: self.skipped_steps,
            bits: self.layer_bits(),
            mix_ratios: (0..self.layers.len())
                .map(|l| self.schedule.mix_ratio(l))
                .collect(),
        });
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

impl<O, M, B> MoqOptimizer<O, M, B>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    /// The trained model as real low-bit codes: each quantized parameter's full-precision
    /// master quantized at the bits its layer reached (rounding to nearest), packed eight 4-bit
    /// or four 8-bit codes per `u32` with f32 scales per group; every other float parameter of
    /// `model` in f32. Save it with [`MoqFile::save`]; `moq inspect` prints what it holds.
    ///
    /// With nearest rounding and no mixing, dequantizing the codes gives exactly the weights the
    /// model was using after its last step.
    pub fn export(&self, model: &M) -> Result<MoqFile> {
        let mut finder = ParamFinder {
            path: Vec::new(),
            found: Vec::new(),
        };
        model.visit(&mut finder);
        // Host copies of what is exported as is: the parameters that have no master.
        let mut values = FloatValues {
            skip: &self.masters,
            values: HashMap::new(),
        };
        model.visit(&mut values);
        let mut file = MoqFile::default();
        for f in finder.found {
            let Some(&i) = self.index.get(&f.id) else {
                let Some(v) = values.values.remove(&f.id) else {
                    continue;
                };
                file.float.push((f.path, f.shape, v));
                continue;
            };
            let p = &self.params[i];
            let bits = self
                .schedule
                .bits(p.layer)
                .ok_or_else(|| MoqBurnError::Export {
                    reason: "no quantizing step has been taken yet: nothing to export".into(),
                })?;
            let master = match self.masters.get(&p.id) {
                Some(m) => host_values(m.clone(), &p.path)?,
                None => values.values.remove(&p.id).unwrap_or_default(),
            };
            let mut spec = QuantSpec::from_config(&self.config, bits);
            spec.rounding = moq_core::Rounding::Nearest;
            let q = moq_core::quantize(&p.path, &master, &spec)?;
            let row_len = *p.shape.last().unwrap_or(&1);
            let packed = moq_core::pack(&q, row_len, CodeLayout::Packed32, ScaleFormat::F32)?;
            file.quantized.push(Exported {
                name: p.path.clone(),
                shape: p.shape.clone(),
                packed,
            });
        }
        Ok(file)
    }
}

fn host_values<IB: Backend>(t: Tensor<IB, 1>, path: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| MoqBurnError::Read {
            tensor: path.to_string(),
            message: format!("{e:?}"),
        })
}

/// The host values of every float parameter that has no master in `skip`.
struct FloatValues<'a, IB: Backend> {
    skip: &'a HashMap<ParamId, Tensor<IB, 1>>,
    values: HashMap<ParamId, Vec<f32>>,
}

impl<B: Backend, IB: Backend> ModuleVisitor<B> for FloatValues<'_, IB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.skip.contains_key(&param.id) {
            return;
        }
        if let Ok(v) = param.val().into_data().convert::<f32>().into_vec::<f32>() {
            self.values.insert(param.id, v);
        }
    }
}

impl<O, M, B> MoqOptimizer<O, M, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    fn restore(&self, module: M) -> M {
        module.map(&mut Restore {
            index: &self.index,
            params: &self.params,
            masters: &self.masters,
        })
    }

    fn after_step(&mut self, module: M) -> M {
        let e = &self.config.eigenvalue;
        let due = (self.schedule.steps_taken() + 1).is_multiple_of(e.gas_boundary_resolution);
        if e.enabled && self.eigenvalues.is_none() && self.schedule.steps_taken() == 0 {
            log::warn!(
                "MoQ: eigenvalue.enabled is set but no EigenvalueProvider is attached \
                 (MoqOptimizer::with_eigenvalues): periods are not stretched"
            );
        }
        if e.enabled && due && self.schedule.drops_within(e.gas_boundary_resolution) {
            let values = match self.eigenvalues.as_ref().map(|p| p.lock()) {
                Some(Ok(mut provider)) => provider.eigenvalues(&module, &self.layers),
                _ => Ok(None),
            };
            let set = values.and_then(|v| match v {
                Some(v) => Ok(self.schedule.set_eigenvalues(&v)?),
                None => Ok(()),
            });
            if let Err(err) = set {
                self.record_error(err);
            }
        }
        let report = self.schedule.step();
        if self.config.verbose {
            for d in &report.drops {
                log::info!(
                    "MoQ step {}: layer {} ({}) {} → {} bits",
                    report.step,
                    d.layer,
                    self.layers[d.layer].name,
                    d.from,
                    d.to
                );
            }
        }
        let plan: Option<Vec<(QuantSpec, f32)>> = report.quantize.then(|| {
            self.params
                .iter()
                .map(|p| {
                    let bits = self.schedule.bits(p.layer).expect("quantizing step");
                    let mut spec = QuantSpec::from_config(&self.config, bits);
                    spec.noise = NoiseKey {
                        seed: self.seed,
                        step: report.step,
                        stream: p.stream,
                    };
                    (spec, self.schedule.mix_ratio(p.layer))
                })
                .collect()
        });
        let mut mapper = Quantize {
            index: &self.index,
            params: &self.params,
            masters: &mut self.masters,
            plan: plan.as_deref(),
            error: None,
        };
        let module = module.map(&mut mapper);
        if let Some(err) = mapper.error {
            self.record_error(err);
        }
        self.publish_status();
        module
    }

    fn record_error(&self, err: MoqBurnError) {
        log::error!("MoQ: {err}");
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(err);
        }
    }

    fn skip(&mut self, module: M) -> M {
        self.skipped_steps += 1;
        self.publish_status();
        log::warn!(
            "MoQ: gradient holds NaN or Inf; step skipped ({} so far)",
            self.skipped_steps
        );
        module
    }
}

impl<O, M, B> Optimizer<M, B> for MoqOptimizer<O, M, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    type Record = MoqRecord<O::Record, B>;

    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        if !grads_finite::<B, M>(&module, std::iter::once(&grads)) {
            return self.skip(module);
        }
        let module = self.restore(module);
        let module = self.inner.step(lr, module, grads);
        self.after_step(module)
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        if !grads_finite::<B, M>(&module, grads.grads.iter().map(|(g, _)| g)) {
            return self.skip(module);
        }
        let module = self.restore(module);
        let module = self.inner.step_multi(lr, module, grads);
        self.after_step(module)
    }

    fn to_record(&self) -> Self::Record {
        let state = SavedState {
            params: self.params.iter().map(|p| p.path.clone()).collect(),
            schedule: self.schedule.clone(),
            skipped_steps: self.skipped_steps,
            seed: self.seed,
            eigenvalues: self
                .eigenvalues
                .as_ref()
                .and_then(|p| p.lock().ok()?.save_state()),
        };
        MoqRecord {
            inner: self.inner.to_record(),
            masters: self
                .params
                .iter()
                .map(|p| {
                    self.masters
                        .get(&p.id)
                        .map(|t| Tensor::from_inner(t.clone()))
                })
                .collect(),
            state: serde_json::to_string(&state).expect("MoQ state serializes"),
        }
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        // The Optimizer trait has no error channel: a state that does not fit is reported
        // through `take_error` and the optimizer keeps its current MoQ state.
        match self.check_record(&record) {
            Ok(state) => {
                if let (Some(saved), Some(provider)) = (&state.eigenvalues, &self.eigenvalues)
                    && let Ok(mut provider) = provider.lock()
                    && let Err(err) = provider.load_state(saved)
                {
                    self.record_error(err);
                }
                self.schedule = state.schedule;
                self.skipped_steps = state.skipped_steps;
                self.seed = state.seed;
                self.masters = self
                    .params
                    .iter()
                    .zip(record.masters)
                    .filter_map(|(p, t)| Some((p.id, t?.inner())))
                    .collect();
            }
            Err(err) => self.record_error(err),
        }
        self.inner = self.inner.load_record(record.inner);
        self
    }
}

impl<O, M, B: AutodiffBackend> MoqOptimizer<O, M, B> {
    fn check_record(&self, record: &MoqRecord<impl Record<B>, B>) -> Result<SavedState> {
        let bad = |reason: String| MoqBurnError::Record { reason };
        let state: SavedState =
            serde_json::from_str(&record.state).map_err(|e| bad(e.to_string()))?;
        let paths: Vec<&str> = self.params.iter().map(|p| p.path.as_str()).collect();
        if state.params != paths {
            return Err(bad(format!(
                "it quantizes {} parameters ({}…), this optimizer {} ({}…)",
                state.params.len(),
                state.params.first().map_or("", String::as_str),
                paths.len(),
                paths.first().copied().unwrap_or("")
            )));
        }
        if state.schedule.num_layers() != self.layers.len() {
            return Err(bad(format!(
                "{} layers saved, {} here",
                state.schedule.num_layers(),
                self.layers.len()
            )));
        }
        if record.masters.len() != self.params.len() {
            return Err(bad(format!(
                "{} masters for {} parameters",
                record.masters.len(),
                self.params.len()
            )));
        }
        if let Some((p, _)) = self.params.iter().zip(&record.masters).find(|(p, t)| {
            t.as_ref()
                .is_some_and(|t| t.dims()[0] != p.shape.iter().product::<usize>())
        }) {
            return Err(bad(format!("master of `{}` has the wrong size", p.path)));
        }
        Ok(state)
    }
}

/// What the wrapper saves beyond the inner optimizer's record and the masters.
#[derive(Serialize, Deserialize)]
struct SavedState {
    params: Vec<String>,
    schedule: Schedule,
    skipped_steps: u64,
    seed: u64,
    /// The eigenvalue provider's state, if it has one.
    #[serde(default)]
    eigenvalues: Option<String>,
}

/// The wrapper's record: the inner optimizer's record, the full-precision masters (flattened)
/// and the schedule state as JSON. Save it with full precision settings for a bit-exact resume.
#[derive(burn::record::Record)]
pub struct MoqRecord<R: Record<B>, B: Backend> {
    /// The inner optimizer's record.
    pub inner: R,
    /// Masters, flattened, in the order of the quantized parameters (`None` before the first
    /// step).
    pub masters: Vec<Option<Tensor<B, 1>>>,
    /// Schedule, counters and the list of quantized parameters, as JSON.
    pub state: String,
}

impl<R: Record<B> + Clone, B: Backend> Clone for MoqRecord<R, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            masters: self.masters.clone(),
            state: self.state.clone(),
        }
    }
}

/// Whether every gradient is finite: `Σ sum(g · 0)` is 0 for finite gradients and NaN
/// otherwise, read once per device group.
fn grads_finite<'a, B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: impl Iterator<Item = &'a GradientsParams>,
) -> bool {
    grads.into_iter().all(|g| {
        let mut check = FiniteCheck::<B> {
            grads: g,
            acc: None,
        };
        module.visit(&mut check);
        check
            .acc
            .is_none_or(|acc| acc.into_scalar().elem::<f32>().is_finite())
    })
}

struct FiniteCheck<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for FiniteCheck<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let zero = g.mul_scalar(0.0).sum();
            let zero = match &self.acc {
                Some(acc) if acc.device() != zero.device() => zero.to_device(&acc.device()),
                _ => zero,
            };
            self.acc = Some(match self.acc.take() {
                Some(acc) => acc + zero,
                None => zero,
            });
        }
    }
}

/// Puts the masters back into the module before the inner optimizer's step.
struct Restore<'a, IB: Backend> {
    index: &'a HashMap<ParamId, usize>,
    params: &'a [QuantParam],
    masters: &'a HashMap<ParamId, Tensor<IB, 1>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Restore<'_, B::InnerBackend> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (Some(&i), Some(master)) = (self.index.get(&param.id), self.masters.get(&param.id))
        else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let device = tensor.device();
        let mut restored = Tensor::<B, D>::from_inner(
            master
                .clone()
                .reshape::<D, _>(self.params[i].shape_as::<D>()),
        );
        if restored.device() != device {
            restored = restored.to_device(&device);
        }
        Param::from_mapped_value(id, restored.set_require_grad(require_grad), mapper)
    }
}

impl QuantParam {
    fn shape_as<const D: usize>(&self) -> [usize; D] {
        let mut dims = [1; D];
        dims.copy_from_slice(&self.shape);
        dims
    }
}

/// Stores the new masters and writes the quantized weights (on quantizing steps).
struct Quantize<'a, IB: Backend> {
    index: &'a HashMap<ParamId, usize>,
    params: &'a [QuantParam],
    masters: &'a mut HashMap<ParamId, Tensor<IB, 1>>,
    /// Spec and mixing ratio per parameter, on quantizing steps.
    plan: Option<&'a [(QuantSpec, f32)]>,
    error: Option<MoqBurnError>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Quantize<'_, B::InnerBackend>
where
    B::InnerBackend: MoqBackend,
{
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(&i) = self.index.get(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let master = tensor.inner();
        let numel = self.params[i].shape.iter().product::<usize>();
        self.masters.insert(id, master.clone().reshape([numel]));
        let value = match self.plan {
            Some(plan) => {
                let (spec, mix) = &plan[i];
                match fake_quantize(master.clone(), &self.params[i].path, spec, *mix) {
                    Ok(q) => q,
                    Err(err) => {
                        self.error = Some(err);
                        master
                    }
                }
            }
            None => master,
        };
        Param::from_mapped_value(
            id,
            Tensor::from_inner(value).set_require_grad(require_grad),
            mapper,
        )
    }
}

/// Finds every float parameter with its path and shape.
struct ParamFinder {
    path: Vec<String>,
    found: Vec<Found>,
}

struct Found {
    id: ParamId,
    path: String,
    shape: Vec<usize>,
}

impl<B: Backend> ModuleVisitor<B> for ParamFinder {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.found.push(Found {
            id: param.id,
            path: self.path.join("."),
            shape: param.val().dims().to_vec(),
        });
    }
}

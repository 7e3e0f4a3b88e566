//! [`Moq`]: which parameters are quantized, how they form layers, and their bits; checked when
//! the wrapper is built.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use moq_core::allocate::{Budget, DEFAULT_CANDIDATES};
use moq_core::{LayerSpec, QuantSpec, QuantizeConfig, Schedule};
use moq_hessian::path::{NamedParam, float_params};

use super::{AutoBits, MoqOptimizer, MoqStatus, QuantParam};
use crate::backend::MoqBackend;
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
    group_size: Option<usize>,
    auto_bits: Option<AutoBits>,
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
            group_size: None,
            auto_bits: None,
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

    /// Quantizes every selected parameter in groups of `values` contiguous values (row-major),
    /// each with its own scale, instead of `quantize_groups` groups per parameter: the
    /// "group size 128" of GPTQ, AWQ and llama.cpp, the same grain in a 384 × 384 attention
    /// matrix as in a 384 × 1536 feed-forward one. A parameter whose size is not a multiple of
    /// `values` is refused by [`Moq::init`], by name.
    pub fn group_size(mut self, values: usize) -> Self {
        self.group_size = Some(values);
        self
    }

    /// Second-order bit allocation: at the end of the warm-up (`schedule_offset`), each
    /// layer's target becomes the width that minimises `Σ s·‖Q_b(W) − W‖²` within `budget`
    /// over `candidates` (default [`DEFAULT_CANDIDATES`]), with `s` the eigenvalue provider's
    /// `|λ|` per layer (1 for every layer without a provider). The result is in
    /// [`MoqOptimizer::allocation`] and in the log; a failure is reported through
    /// [`MoqOptimizer::take_error`] and leaves the targets as configured. With a schedule
    /// (start above target: MoQ), widths above a layer's start width are capped at it; without
    /// one (start = target: basic QAT), each layer trains at its allocated width from the
    /// first quantizing step, above or below the configured one ("QAT + second-order widths").
    pub fn auto_bits(mut self, budget: Budget, candidates: Option<&[u32]>) -> Self {
        self.auto_bits = Some(AutoBits {
            budget,
            candidates: candidates.map_or_else(|| DEFAULT_CANDIDATES.to_vec(), <[u32]>::to_vec),
        });
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
        if !self.config.enabled {
            log::warn!(
                "MoQ: quantize_training.enabled is false: the wrapper passes every step to the \
                 inner optimizer unchanged (nothing is quantized)"
            );
        }
        let found = float_params(model);
        let patterns = self.patterns(&found)?;
        let selected: Vec<&NamedParam> = found
            .iter()
            .filter(|f| f.shape.len() >= self.min_rank)
            .filter(|f| {
                patterns.include.is_empty() || patterns.include.iter().any(|p| p.matches(&f.path))
            })
            .filter(|f| !patterns.exclude.iter().any(|p| p.matches(&f.path)))
            .collect();
        if selected.is_empty() {
            return Err(MoqBurnError::NothingSelected {
                params: found.len(),
            });
        }
        let (layers, params) = self.assign_layers(&selected, &patterns)?;
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
            auto_bits: self.auto_bits,
            allocation: None,
            _types: PhantomData,
        }
        .indexed())
    }

    /// The builder's path patterns, parsed, each required to match a parameter of `found`.
    fn patterns(&self, found: &[NamedParam]) -> Result<Patterns> {
        let example = found.first().map_or_else(
            || "(the model has no float parameter)".to_string(),
            |p| p.path.clone(),
        );
        let parse = |pattern: &str, captures: bool, role: &'static str| {
            let parsed = PathPattern::parse(pattern, captures)?;
            if !found.iter().any(|f| parsed.matches(&f.path)) {
                return Err(MoqBurnError::NoMatch {
                    pattern: pattern.to_string(),
                    role,
                    example: example.clone(),
                });
            }
            Ok(parsed)
        };
        let all = |patterns: &[String], role| {
            patterns
                .iter()
                .map(|p| parse(p, false, role))
                .collect::<Result<Vec<_>>>()
        };
        let group_patterns: Vec<String> = self.bit_groups.iter().map(|g| g.0.clone()).collect();
        Ok(Patterns {
            include: all(&self.include, "include")?,
            exclude: all(&self.exclude, "exclude")?,
            groups: all(&group_patterns, "bits_for")?,
            layers: self
                .layers
                .as_ref()
                .map(|p| parse(p, true, "layers"))
                .transpose()?,
        })
    }

    /// The layers of the schedule and the quantized parameters: pattern layers by index
    /// first, then one layer per remaining parameter.
    fn assign_layers(
        &self,
        selected: &[&NamedParam],
        patterns: &Patterns,
    ) -> Result<(Vec<MoqLayer>, Vec<QuantParam>)> {
        let capture = |path: &str| patterns.layers.as_ref().and_then(|p| p.capture(path));
        let mut layer_of_index: Vec<usize> =
            selected.iter().filter_map(|f| capture(&f.path)).collect();
        layer_of_index.sort_unstable();
        layer_of_index.dedup();
        let new_layer = |name: String| MoqLayer {
            name,
            spec: LayerSpec::from_config(&self.config),
            params: Vec::new(),
        };
        let mut layers: Vec<MoqLayer> = layer_of_index
            .iter()
            .map(|i| {
                new_layer(
                    patterns
                        .layers
                        .as_ref()
                        .map_or(String::new(), |p| p.as_str().replace("{i}", &i.to_string())),
                )
            })
            .collect();
        let base = QuantSpec::from_config(&self.config, self.config.start_bits);
        let mut params = Vec::with_capacity(selected.len());
        for (stream, f) in selected.iter().enumerate() {
            let numel: usize = f.shape.iter().product();
            let param_groups = self.groups_of(&f.path, numel)?;
            QuantSpec {
                groups: param_groups,
                ..base
            }
            .check(&f.path, numel)?;
            let layer = match capture(&f.path) {
                Some(i) => layer_of_index
                    .binary_search(&i)
                    .expect("index collected above"),
                None => {
                    layers.push(new_layer(f.path.clone()));
                    layers.len() - 1
                }
            };
            self.add_to_layer(&mut layers[layer], &f.path, patterns)?;
            params.push(QuantParam {
                id: f.id,
                path: f.path.clone(),
                shape: f.shape.clone(),
                layer,
                stream: stream as u64,
                groups: param_groups,
            });
        }
        Ok((layers, params))
    }

    /// Adds parameter `path` to `layer`, whose bits it sets (its `bits_for` group's, or the
    /// config's); an error when the layer's parameters are in different bit groups.
    fn add_to_layer(&self, layer: &mut MoqLayer, path: &str, patterns: &Patterns) -> Result<()> {
        let spec = match patterns.groups.iter().position(|g| g.matches(path)) {
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
        if layer.params.is_empty() {
            layer.spec = spec;
        } else if layer.spec != spec {
            let patterns: Vec<String> = self.bit_groups.iter().map(|g| g.0.clone()).collect();
            return Err(MoqBurnError::BadPattern {
                pattern: patterns.join(", "),
                reason: format!(
                    "layer `{}` has parameters in different bit groups",
                    layer.name
                ),
            });
        }
        layer.params.push(path.to_string());
        Ok(())
    }
}

impl Moq {
    /// The groups of the parameter at `path` with `numel` values.
    fn groups_of(&self, path: &str, numel: usize) -> Result<usize> {
        let Some(size) = self.group_size else {
            return Ok(self.config.groups);
        };
        if size == 0 || !numel.is_multiple_of(size) {
            return Err(MoqBurnError::GroupSize {
                tensor: path.to_string(),
                values: numel,
                group_size: size,
            });
        }
        Ok(numel / size)
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

/// The builder's path patterns, parsed ([`Moq::init`]).
struct Patterns {
    include: Vec<PathPattern>,
    exclude: Vec<PathPattern>,
    /// One per `bits_for` group, in order.
    groups: Vec<PathPattern>,
    /// The `layers("…{i}…")` pattern.
    layers: Option<PathPattern>,
}

//! The `quantize_training` config, read from DeepSpeed JSON or built in Rust.
//!
//! [`QuantizeConfig::from_json_str`] reads a whole `ds_config.json` (top-level keys other than
//! `quantize_training` and `eigenvalue` are ignored) or the section on its own. Unlike DeepSpeed,
//! nothing is silently ignored inside the section: an unknown key, a value of the wrong type or
//! out of range is an error that names the key (DESIGN.md section 3 lists the keys).
//!
//! ```
//! use moq_core::{QuantizeConfig, QuantType};
//! let cfg = QuantizeConfig::from_json_str(r#"{
//!     "train_batch_size": 32,
//!     "quantize_training": {
//!         "enabled": true,
//!         "quantize_bits": {"start_bits": 12, "target_bits": 8},
//!         "quantize_schedule": {"quantize_period": 10, "schedule_offset": 0},
//!         "quantize_groups": 8,
//!         "quantize_algo": {"q_type": "asymmetric"}
//!     }
//! }"#).unwrap();
//! assert_eq!((cfg.start_bits, cfg.target_bits, cfg.groups), (12, 8, 8));
//! assert_eq!(cfg.quant_type, QuantType::Asymmetric);
//!
//! let err = QuantizeConfig::from_json_str(r#"{"quantize_bits": {"start_bit": 12}}"#).unwrap_err();
//! assert_eq!(err.to_string(),
//!     "unknown config key `quantize_bits.start_bit` (did you mean `start_bits`?)");
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{MoqError, Result};

/// Largest supported bit width.
pub const MAX_BITS: u32 = 16;

/// How values map to the integer grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    /// Grid symmetric around zero, no zero point: `q·s`.
    Symmetric,
    /// Grid spanning `[min, max]` with an integer zero point: `(q − z)·s`.
    Asymmetric,
}

impl QuantType {
    /// The DeepSpeed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantType::Symmetric => "symmetric",
            QuantType::Asymmetric => "asymmetric",
        }
    }
}

/// How a value between two grid points is rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// To the nearest grid point (ties to even).
    Nearest,
    /// Up or down at random, with the probability that makes the result unbiased.
    Stochastic,
}

impl Rounding {
    /// The DeepSpeed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Rounding::Nearest => "nearest",
            Rounding::Stochastic => "stochastic",
        }
    }
}

/// `fp16_mixed_quantize`: blend full-precision and quantized weights, moving towards the
/// quantized ones by `change_ratio` per quantizing step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MixingConfig {
    /// Whether mixing is on.
    pub enabled: bool,
    /// `quantize_change_ratio`: how much the full-precision share drops per step, in (0, 1].
    pub change_ratio: f64,
}

impl Default for MixingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            change_ratio: 0.001,
        }
    }
}

/// `eigenvalue`: per-layer Hessian eigenvalues that stretch each layer's period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EigenvalueConfig {
    /// Whether eigenvalues drive the schedule.
    pub enabled: bool,
    /// Log each computation.
    pub verbose: bool,
    /// Power-iteration limit.
    pub max_iter: u32,
    /// Stop when the relative change of λ falls below this.
    pub tol: f64,
    /// Added to the norm when normalizing the iterate.
    pub stability: f64,
    /// Recompute every this many optimizer steps.
    pub gas_boundary_resolution: u64,
    /// DeepSpeed's module-name prefix of the layers (burn users give a path pattern instead).
    pub layer_name: String,
    /// DeepSpeed's number of layers under `layer_name`.
    pub layer_num: usize,
}

impl Default for EigenvalueConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            verbose: false,
            max_iter: 100,
            tol: 1e-2,
            stability: 1e-6,
            gas_boundary_resolution: 1,
            layer_name: "bert.encoder.layer".to_string(),
            layer_num: 0,
        }
    }
}

/// The whole `quantize_training` section. Fields are public; [`QuantizeConfig::validate`]
/// checks a value built by hand, and [`QuantizeConfig::builder`] builds a checked one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizeConfig {
    /// `enabled` (DeepSpeed's default: false).
    pub enabled: bool,
    /// `quantize_verbose`: log every bit drop.
    pub verbose: bool,
    /// `quantizer_kernel`: accepted for compatibility; MoQ picks kernels by backend.
    pub quantizer_kernel: bool,
    /// `quantize_type` / `quantize_algo.q_type`.
    pub quant_type: QuantType,
    /// `quantize_algo.rounding`.
    pub rounding: Rounding,
    /// `quantize_bits.start_bits`.
    pub start_bits: u32,
    /// `quantize_bits.target_bits`.
    pub target_bits: u32,
    /// `quantize_schedule.quantize_period`, in quantizing steps.
    pub period: u64,
    /// `quantize_schedule.schedule_offset`: optimizer steps before quantization starts.
    pub schedule_offset: u64,
    /// `quantize_groups`: groups per parameter, each with its own scale.
    pub groups: usize,
    /// `fp16_mixed_quantize`.
    pub mixing: MixingConfig,
    /// `eigenvalue`.
    pub eigenvalue: EigenvalueConfig,
}

impl Default for QuantizeConfig {
    /// DeepSpeed's code defaults (with `enabled: false`, as there).
    fn default() -> Self {
        Self {
            enabled: false,
            verbose: false,
            quantizer_kernel: false,
            quant_type: QuantType::Symmetric,
            rounding: Rounding::Nearest,
            start_bits: 16,
            target_bits: 8,
            period: 1000,
            schedule_offset: 1000,
            groups: 1,
            mixing: MixingConfig::default(),
            eigenvalue: EigenvalueConfig::default(),
        }
    }
}

const SECTION: &str = "quantize_training";
const SECTION_KEYS: &[&str] = &[
    "enabled",
    "quantize_verbose",
    "quantizer_kernel",
    "quantize_type",
    "quantize_bits",
    "quantize_schedule",
    "quantize_groups",
    "quantize_algo",
    "fp16_mixed_quantize",
    "eigenvalue",
];
const BITS_KEYS: &[&str] = &["start_bits", "target_bits"];
const SCHEDULE_KEYS: &[&str] = &["quantize_period", "schedule_offset"];
const ALGO_KEYS: &[&str] = &["q_type", "rounding"];
const MIXING_KEYS: &[&str] = &["enabled", "quantize_change_ratio"];
const EIGEN_KEYS: &[&str] = &[
    "enabled",
    "verbose",
    "max_iter",
    "tol",
    "stability",
    "gas_boundary_resolution",
    "layer_name",
    "layer_num",
];

impl QuantizeConfig {
    /// Starts a builder from DeepSpeed's defaults, with `enabled` set.
    pub fn builder() -> QuantizeConfigBuilder {
        QuantizeConfigBuilder {
            config: QuantizeConfig {
                enabled: true,
                ..Self::default()
            },
        }
    }

    /// Reads a whole DeepSpeed config or the `quantize_training` section alone.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| MoqError::Json {
            message: e.to_string(),
        })?;
        Self::from_json_value(&value)
    }

    /// Like [`QuantizeConfig::from_json_str`], from parsed JSON.
    pub fn from_json_value(value: &Value) -> Result<Self> {
        let Value::Object(top) = value else {
            return Err(MoqError::WrongType {
                key: "(top level)".into(),
                expected: "an object",
                found: short(value),
            });
        };
        // A whole ds_config holds the section under its name; the section alone holds its keys.
        let (section, prefix, top_eigen) = if let Some(section) = top.get(SECTION) {
            let section = as_object(section, SECTION)?;
            (section, format!("{SECTION}."), top.get("eigenvalue"))
        } else if top.is_empty() || top.keys().any(|k| SECTION_KEYS.contains(&k.as_str())) {
            (top, String::new(), None)
        } else {
            let keys = top
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(MoqError::MissingSection { keys });
        };
        let mut cfg = parse_section(section, &prefix)?;
        if let Some(top_eigen) = top_eigen {
            let outer = parse_eigen(as_object(top_eigen, "eigenvalue")?, "eigenvalue.")?;
            let inner = match section.get("eigenvalue") {
                Some(v) => {
                    let path = format!("{prefix}eigenvalue");
                    parse_eigen(as_object(v, &path)?, &format!("{path}."))?
                }
                None => PartialEigen::default(),
            };
            cfg.eigenvalue = inner.merge(outer, &format!("{prefix}eigenvalue."), "eigenvalue.")?;
        }
        cfg.validate_with_prefix(&prefix)?;
        Ok(cfg)
    }

    /// The section as DeepSpeed JSON (every key written, so the file documents the run).
    pub fn to_json_value(&self) -> Value {
        json!({
            "enabled": self.enabled,
            "quantize_verbose": self.verbose,
            "quantizer_kernel": self.quantizer_kernel,
            "quantize_bits": {"start_bits": self.start_bits, "target_bits": self.target_bits},
            "quantize_schedule": {
                "quantize_period": self.period,
                "schedule_offset": self.schedule_offset
            },
            "quantize_groups": self.groups,
            "quantize_algo": {"q_type": self.quant_type.as_str(), "rounding": self.rounding.as_str()},
            "fp16_mixed_quantize": {
                "enabled": self.mixing.enabled,
                "quantize_change_ratio": self.mixing.change_ratio
            },
            "eigenvalue": {
                "enabled": self.eigenvalue.enabled,
                "verbose": self.eigenvalue.verbose,
                "max_iter": self.eigenvalue.max_iter,
                "tol": self.eigenvalue.tol,
                "stability": self.eigenvalue.stability,
                "gas_boundary_resolution": self.eigenvalue.gas_boundary_resolution,
                "layer_name": self.eigenvalue.layer_name,
                "layer_num": self.eigenvalue.layer_num
            }
        })
    }

    /// Checks every rule of DESIGN.md section 3; the error names the key (in DeepSpeed's
    /// spelling, relative to the section).
    pub fn validate(&self) -> Result<()> {
        self.validate_with_prefix("")
    }

    fn validate_with_prefix(&self, p: &str) -> Result<()> {
        let invalid = |key: &str, value: String, reason: &str| MoqError::InvalidValue {
            key: format!("{p}{key}"),
            value,
            reason: reason.to_string(),
        };
        for (key, bits) in [
            ("quantize_bits.start_bits", self.start_bits),
            ("quantize_bits.target_bits", self.target_bits),
        ] {
            if !(1..=MAX_BITS).contains(&bits) {
                return Err(invalid(
                    key,
                    bits.to_string(),
                    "bits must be between 1 and 16",
                ));
            }
        }
        if self.target_bits > self.start_bits {
            return Err(invalid(
                "quantize_bits.target_bits",
                self.target_bits.to_string(),
                &format!("must not exceed start_bits ({})", self.start_bits),
            ));
        }
        if self.period == 0 {
            return Err(invalid(
                "quantize_schedule.quantize_period",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.groups == 0 {
            return Err(invalid("quantize_groups", "0".into(), "must be at least 1"));
        }
        if self.target_bits <= 2 && self.quant_type == QuantType::Asymmetric {
            return Err(invalid(
                "quantize_bits.target_bits",
                self.target_bits.to_string(),
                "1- and 2-bit quantization is symmetric only, but q_type is asymmetric",
            ));
        }
        if self.target_bits <= 2 && self.rounding == Rounding::Stochastic {
            return Err(invalid(
                "quantize_bits.target_bits",
                self.target_bits.to_string(),
                "1- and 2-bit quantization rounds to nearest only, but rounding is stochastic",
            ));
        }
        let ratio = self.mixing.change_ratio;
        if !(ratio > 0.0 && ratio <= 1.0) {
            return Err(invalid(
                "fp16_mixed_quantize.quantize_change_ratio",
                ratio.to_string(),
                "must be in (0, 1]",
            ));
        }
        let e = &self.eigenvalue;
        if e.max_iter == 0 {
            return Err(invalid(
                "eigenvalue.max_iter",
                "0".into(),
                "must be at least 1",
            ));
        }
        if !(e.tol.is_finite() && e.tol > 0.0) {
            return Err(invalid(
                "eigenvalue.tol",
                e.tol.to_string(),
                "must be positive",
            ));
        }
        if !(e.stability.is_finite() && e.stability >= 0.0) {
            return Err(invalid(
                "eigenvalue.stability",
                e.stability.to_string(),
                "must be ≥ 0",
            ));
        }
        if e.gas_boundary_resolution == 0 {
            return Err(invalid(
                "eigenvalue.gas_boundary_resolution",
                "0".into(),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Number of bit drops from start to target.
    pub fn drops(&self) -> u32 {
        self.start_bits - self.target_bits
    }
}

/// Builds a validated [`QuantizeConfig`] in Rust; starts from DeepSpeed's defaults.
///
/// ```
/// use moq_core::{QuantizeConfig, Rounding};
/// let cfg = QuantizeConfig::builder()
///     .bits(12, 4)
///     .period(50)
///     .schedule_offset(0)
///     .groups(16)
///     .rounding(Rounding::Stochastic)
///     .build()
///     .unwrap();
/// assert!(cfg.enabled);
/// assert!(QuantizeConfig::builder().bits(4, 8).build().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct QuantizeConfigBuilder {
    config: QuantizeConfig,
}

impl QuantizeConfigBuilder {
    /// Start and target bit widths.
    pub fn bits(mut self, start: u32, target: u32) -> Self {
        self.config.start_bits = start;
        self.config.target_bits = target;
        self
    }
    /// Quantizing steps before the first drop (the period doubles after each drop).
    pub fn period(mut self, period: u64) -> Self {
        self.config.period = period;
        self
    }
    /// Optimizer steps before quantization starts.
    pub fn schedule_offset(mut self, offset: u64) -> Self {
        self.config.schedule_offset = offset;
        self
    }
    /// Quantization groups per parameter.
    pub fn groups(mut self, groups: usize) -> Self {
        self.config.groups = groups;
        self
    }
    /// Symmetric or asymmetric grid.
    pub fn quant_type(mut self, quant_type: QuantType) -> Self {
        self.config.quant_type = quant_type;
        self
    }
    /// Nearest or stochastic rounding.
    pub fn rounding(mut self, rounding: Rounding) -> Self {
        self.config.rounding = rounding;
        self
    }
    /// Turns on mixing with the given change ratio per quantizing step.
    pub fn mixing(mut self, change_ratio: f64) -> Self {
        self.config.mixing = MixingConfig {
            enabled: true,
            change_ratio,
        };
        self
    }
    /// Eigenvalue settings.
    pub fn eigenvalue(mut self, eigenvalue: EigenvalueConfig) -> Self {
        self.config.eigenvalue = eigenvalue;
        self
    }
    /// Log every bit drop.
    pub fn verbose(mut self, verbose: bool) -> Self {
        self.config.verbose = verbose;
        self
    }
    /// Checks the rules and returns the config.
    pub fn build(self) -> Result<QuantizeConfig> {
        self.config.validate()?;
        Ok(self.config)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing with precise errors.

fn parse_section(section: &Map<String, Value>, p: &str) -> Result<QuantizeConfig> {
    check_keys(section, p, SECTION_KEYS)?;
    let mut cfg = QuantizeConfig::default();
    let key = |k: &str| format!("{p}{k}");
    if let Some(v) = section.get("enabled") {
        cfg.enabled = as_bool(v, &key("enabled"))?;
    }
    if let Some(v) = section.get("quantize_verbose") {
        cfg.verbose = as_bool(v, &key("quantize_verbose"))?;
    }
    if let Some(v) = section.get("quantizer_kernel") {
        cfg.quantizer_kernel = as_bool(v, &key("quantizer_kernel"))?;
    }
    if let Some(v) = section.get("quantize_bits") {
        let path = key("quantize_bits");
        let obj = as_object(v, &path)?;
        check_keys(obj, &format!("{path}."), BITS_KEYS)?;
        if let Some(v) = obj.get("start_bits") {
            cfg.start_bits = as_bits(v, &format!("{path}.start_bits"))?;
        }
        if let Some(v) = obj.get("target_bits") {
            cfg.target_bits = as_bits(v, &format!("{path}.target_bits"))?;
        }
    }
    if let Some(v) = section.get("quantize_schedule") {
        let path = key("quantize_schedule");
        let obj = as_object(v, &path)?;
        check_keys(obj, &format!("{path}."), SCHEDULE_KEYS)?;
        if let Some(v) = obj.get("quantize_period") {
            cfg.period = as_u64(v, &format!("{path}.quantize_period"))?;
        }
        if let Some(v) = obj.get("schedule_offset") {
            cfg.schedule_offset = as_u64(v, &format!("{path}.schedule_offset"))?;
        }
    }
    if let Some(v) = section.get("quantize_groups") {
        cfg.groups = as_usize(v, &key("quantize_groups"))?;
    }
    let outer_type = match section.get("quantize_type") {
        Some(v) => Some(as_quant_type(v, &key("quantize_type"))?),
        None => None,
    };
    let mut inner_type = None;
    if let Some(v) = section.get("quantize_algo") {
        let path = key("quantize_algo");
        let obj = as_object(v, &path)?;
        check_keys(obj, &format!("{path}."), ALGO_KEYS)?;
        if let Some(v) = obj.get("q_type") {
            inner_type = Some(as_quant_type(v, &format!("{path}.q_type"))?);
        }
        if let Some(v) = obj.get("rounding") {
            let k = format!("{path}.rounding");
            cfg.rounding = match as_str(v, &k)? {
                "nearest" => Rounding::Nearest,
                "stochastic" => Rounding::Stochastic,
                other => return Err(bad_choice(&k, other, &["nearest", "stochastic"])),
            };
        }
    }
    cfg.quant_type = match (outer_type, inner_type) {
        (Some(a), Some(b)) if a != b => {
            return Err(MoqError::Conflict {
                first: key("quantize_type"),
                first_value: format!("\"{}\"", a.as_str()),
                second: key("quantize_algo.q_type"),
                second_value: format!("\"{}\"", b.as_str()),
            });
        }
        (a, b) => a.or(b).unwrap_or(QuantType::Symmetric),
    };
    if let Some(v) = section.get("fp16_mixed_quantize") {
        let path = key("fp16_mixed_quantize");
        let obj = as_object(v, &path)?;
        check_keys(obj, &format!("{path}."), MIXING_KEYS)?;
        if let Some(v) = obj.get("enabled") {
            cfg.mixing.enabled = as_bool(v, &format!("{path}.enabled"))?;
        }
        if let Some(v) = obj.get("quantize_change_ratio") {
            cfg.mixing.change_ratio = as_f64(v, &format!("{path}.quantize_change_ratio"))?;
        }
    }
    if let Some(v) = section.get("eigenvalue") {
        let path = key("eigenvalue");
        let partial = parse_eigen(as_object(v, &path)?, &format!("{path}."))?;
        cfg.eigenvalue = partial.merge(PartialEigen::default(), "", "")?;
    }
    Ok(cfg)
}

/// The eigenvalue keys as given in one place (absent keys are `None`).
#[derive(Default)]
struct PartialEigen {
    enabled: Option<bool>,
    verbose: Option<bool>,
    max_iter: Option<u32>,
    tol: Option<f64>,
    stability: Option<f64>,
    gas_boundary_resolution: Option<u64>,
    layer_name: Option<String>,
    layer_num: Option<usize>,
}

fn parse_eigen(obj: &Map<String, Value>, p: &str) -> Result<PartialEigen> {
    check_keys(obj, p, EIGEN_KEYS)?;
    let k = |s: &str| format!("{p}{s}");
    let get = |s: &str| obj.get(s);
    Ok(PartialEigen {
        enabled: get("enabled")
            .map(|v| as_bool(v, &k("enabled")))
            .transpose()?,
        verbose: get("verbose")
            .map(|v| as_bool(v, &k("verbose")))
            .transpose()?,
        max_iter: get("max_iter")
            .map(|v| {
                let n = as_u64(v, &k("max_iter"))?;
                u32::try_from(n).map_err(|_| out_of_range(&k("max_iter"), v))
            })
            .transpose()?,
        tol: get("tol").map(|v| as_f64(v, &k("tol"))).transpose()?,
        stability: get("stability")
            .map(|v| as_f64(v, &k("stability")))
            .transpose()?,
        gas_boundary_resolution: get("gas_boundary_resolution")
            .map(|v| as_u64(v, &k("gas_boundary_resolution")))
            .transpose()?,
        layer_name: get("layer_name")
            .map(|v| as_str(v, &k("layer_name")).map(str::to_string))
            .transpose()?,
        layer_num: get("layer_num")
            .map(|v| as_usize(v, &k("layer_num")))
            .transpose()?,
    })
}

impl PartialEigen {
    /// Fills `self` from `other`; a key given in both with different values is a conflict.
    fn merge(self, other: PartialEigen, p_self: &str, p_other: &str) -> Result<EigenvalueConfig> {
        fn pick<T: PartialEq + std::fmt::Debug>(
            a: Option<T>,
            b: Option<T>,
            name: &str,
            pa: &str,
            pb: &str,
        ) -> Result<Option<T>> {
            match (a, b) {
                (Some(a), Some(b)) if a != b => Err(MoqError::Conflict {
                    first: format!("{pa}{name}"),
                    first_value: format!("{a:?}"),
                    second: format!("{pb}{name}"),
                    second_value: format!("{b:?}"),
                }),
                (a, b) => Ok(a.or(b)),
            }
        }
        let d = EigenvalueConfig::default();
        let (a, b) = (p_self, p_other);
        Ok(EigenvalueConfig {
            enabled: pick(self.enabled, other.enabled, "enabled", a, b)?.unwrap_or(d.enabled),
            verbose: pick(self.verbose, other.verbose, "verbose", a, b)?.unwrap_or(d.verbose),
            max_iter: pick(self.max_iter, other.max_iter, "max_iter", a, b)?.unwrap_or(d.max_iter),
            tol: pick(self.tol, other.tol, "tol", a, b)?.unwrap_or(d.tol),
            stability: pick(self.stability, other.stability, "stability", a, b)?
                .unwrap_or(d.stability),
            gas_boundary_resolution: pick(
                self.gas_boundary_resolution,
                other.gas_boundary_resolution,
                "gas_boundary_resolution",
                a,
                b,
            )?
            .unwrap_or(d.gas_boundary_resolution),
            layer_name: pick(self.layer_name, other.layer_name, "layer_name", a, b)?
                .unwrap_or(d.layer_name),
            layer_num: pick(self.layer_num, other.layer_num, "layer_num", a, b)?
                .unwrap_or(d.layer_num),
        })
    }
}

fn check_keys(obj: &Map<String, Value>, p: &str, known: &[&str]) -> Result<()> {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            return Err(MoqError::UnknownKey {
                key: format!("{p}{key}"),
                suggestion: suggest(key, known),
            });
        }
    }
    Ok(())
}

/// The nearest known key, if it is close enough to be a likely typo; a key that belongs one
/// level down (for example `start_bits` directly in the section) is pointed to its place.
fn suggest(key: &str, known: &[&str]) -> Option<String> {
    let nested: [(&str, &[&str]); 5] = [
        ("quantize_bits", BITS_KEYS),
        ("quantize_schedule", SCHEDULE_KEYS),
        ("quantize_algo", ALGO_KEYS),
        ("fp16_mixed_quantize", MIXING_KEYS),
        ("eigenvalue", EIGEN_KEYS),
    ];
    if known == SECTION_KEYS {
        for (parent, keys) in nested {
            if keys.contains(&key) && key != "enabled" {
                return Some(format!("{parent}.{key}"));
            }
        }
    }
    let (best, distance) = known
        .iter()
        .map(|k| (*k, edit_distance(key, k)))
        .min_by_key(|(_, d)| *d)?;
    (distance <= (key.len().max(best.len()) / 3).max(2)).then(|| best.to_string())
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j] + 1)
                .min(row[j + 1] + 1)
                .min(diag + usize::from(ca != *cb));
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(40)])
    } else {
        s
    }
}

fn wrong(key: &str, expected: &'static str, v: &Value) -> MoqError {
    MoqError::WrongType {
        key: key.to_string(),
        expected,
        found: short(v),
    }
}

fn out_of_range(key: &str, v: &Value) -> MoqError {
    MoqError::InvalidValue {
        key: key.to_string(),
        value: short(v),
        reason: "out of range".into(),
    }
}

fn bad_choice(key: &str, found: &str, choices: &[&str]) -> MoqError {
    MoqError::InvalidValue {
        key: key.to_string(),
        value: format!("\"{found}\""),
        reason: format!("expected one of {}", choices.join(", ")),
    }
}

fn as_object<'a>(v: &'a Value, key: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| wrong(key, "an object", v))
}

fn as_bool(v: &Value, key: &str) -> Result<bool> {
    v.as_bool().ok_or_else(|| wrong(key, "true or false", v))
}

fn as_str<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.as_str().ok_or_else(|| wrong(key, "a string", v))
}

fn as_u64(v: &Value, key: &str) -> Result<u64> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(n) => Ok(n),
            None if n.as_i64().is_some() => Err(MoqError::InvalidValue {
                key: key.to_string(),
                value: n.to_string(),
                reason: "must not be negative".into(),
            }),
            None => Err(wrong(key, "an integer", v)),
        },
        _ => Err(wrong(key, "an integer", v)),
    }
}

fn as_usize(v: &Value, key: &str) -> Result<usize> {
    usize::try_from(as_u64(v, key)?).map_err(|_| out_of_range(key, v))
}

fn as_bits(v: &Value, key: &str) -> Result<u32> {
    let n = as_u64(v, key)?;
    match u32::try_from(n) {
        Ok(b) if (1..=MAX_BITS).contains(&b) => Ok(b),
        _ => Err(MoqError::InvalidValue {
            key: key.to_string(),
            value: n.to_string(),
            reason: "bits must be between 1 and 16".into(),
        }),
    }
}

fn as_f64(v: &Value, key: &str) -> Result<f64> {
    v.as_f64().ok_or_else(|| wrong(key, "a number", v))
}

fn as_quant_type(v: &Value, key: &str) -> Result<QuantType> {
    match as_str(v, key)? {
        "symmetric" => Ok(QuantType::Symmetric),
        "asymmetric" => Ok(QuantType::Asymmetric),
        other => Err(bad_choice(key, other, &["symmetric", "asymmetric"])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        QuantizeConfig::from_json_str(text).unwrap_err().to_string()
    }

    #[test]
    fn tutorial_config_parses() {
        let cfg = QuantizeConfig::from_json_str(
            r#"{
            "optimizer": {"type": "AdamW"},
            "quantize_training": {
              "enabled": true, "quantize_verbose": true, "quantizer_kernel": true,
              "quantize_type": "symmetric",
              "quantize_bits": {"start_bits": 12, "target_bits": 8},
              "quantize_schedule": {"quantize_period": 10, "schedule_offset": 0},
              "quantize_groups": 8,
              "quantize_algo": {"q_type": "symmetric", "rounding": "nearest"},
              "fp16_mixed_quantize": {"enabled": false, "quantize_change_ratio": 0.001},
              "eigenvalue": {"enabled": true, "verbose": true, "max_iter": 50, "tol": 1e-2,
                             "stability": 0, "gas_boundary_resolution": 1,
                             "layer_name": "bert.encoder.layer", "layer_num": 12}
            }}"#,
        )
        .unwrap();
        assert!(cfg.enabled && cfg.verbose && cfg.quantizer_kernel);
        assert_eq!(
            (
                cfg.start_bits,
                cfg.target_bits,
                cfg.period,
                cfg.schedule_offset
            ),
            (12, 8, 10, 0)
        );
        assert_eq!(cfg.groups, 8);
        assert!(cfg.eigenvalue.enabled);
        assert_eq!(cfg.eigenvalue.max_iter, 50);
        assert_eq!(cfg.eigenvalue.stability, 0.0);
        assert_eq!(cfg.eigenvalue.layer_num, 12);
    }

    #[test]
    fn defaults_are_deepspeeds() {
        let cfg = QuantizeConfig::from_json_str(r#"{"quantize_training": {}}"#).unwrap();
        assert_eq!(cfg, QuantizeConfig::default());
        assert_eq!(
            (
                cfg.start_bits,
                cfg.target_bits,
                cfg.period,
                cfg.schedule_offset
            ),
            (16, 8, 1000, 1000)
        );
        assert_eq!(cfg.groups, 1);
        assert_eq!(cfg.mixing.change_ratio, 0.001);
        assert_eq!(cfg.eigenvalue.max_iter, 100);
        assert_eq!(cfg.eigenvalue.tol, 1e-2);
        assert_eq!(cfg.eigenvalue.stability, 1e-6);
        assert_eq!(cfg.eigenvalue.gas_boundary_resolution, 1);
        assert_eq!(QuantizeConfig::from_json_str("{}").unwrap(), cfg);
    }

    #[test]
    fn eigenvalue_at_top_level_is_read_and_merged() {
        let cfg = QuantizeConfig::from_json_str(
            r#"{"quantize_training": {"eigenvalue": {"max_iter": 7}},
                "eigenvalue": {"enabled": true, "max_iter": 7, "tol": 0.5}}"#,
        )
        .unwrap();
        assert!(cfg.eigenvalue.enabled);
        assert_eq!((cfg.eigenvalue.max_iter, cfg.eigenvalue.tol), (7, 0.5));
        // Outside whole-config mode the section's own eigenvalue is used.
        let cfg = QuantizeConfig::from_json_str(r#"{"eigenvalue": {"enabled": true}}"#).unwrap();
        assert!(cfg.eigenvalue.enabled);
    }

    #[test]
    fn conflicting_spellings_are_errors() {
        assert_eq!(
            err(
                r#"{"quantize_training": {"eigenvalue": {"max_iter": 7}}, "eigenvalue": {"max_iter": 8}}"#
            ),
            "config keys `quantize_training.eigenvalue.max_iter` = 7 and `eigenvalue.max_iter` = 8 disagree"
        );
        assert_eq!(
            err(r#"{"quantize_type": "symmetric", "quantize_algo": {"q_type": "asymmetric"}}"#),
            "config keys `quantize_type` = \"symmetric\" and `quantize_algo.q_type` = \"asymmetric\" disagree"
        );
        // Agreeing spellings are fine.
        let cfg = QuantizeConfig::from_json_str(
            r#"{"quantize_type": "asymmetric", "quantize_algo": {"q_type": "asymmetric"}}"#,
        )
        .unwrap();
        assert_eq!(cfg.quant_type, QuantType::Asymmetric);
    }

    #[test]
    fn unknown_keys_get_suggestions() {
        assert_eq!(
            err(r#"{"quantize_training": {"quantize_group": 8}}"#),
            "unknown config key `quantize_training.quantize_group` (did you mean `quantize_groups`?)"
        );
        assert_eq!(
            err(r#"{"quantize_training": {"start_bits": 8}}"#),
            "unknown config key `quantize_training.start_bits` (did you mean `quantize_bits.start_bits`?)"
        );
        assert_eq!(
            err(r#"{"quantize_training": {"eigenvalue": {"iterations": 8}}}"#),
            "unknown config key `quantize_training.eigenvalue.iterations`"
        );
        assert!(err(r#"{"train_batch_size": 8}"#).starts_with("no `quantize_training` section"));
    }

    #[test]
    fn wrong_types_name_the_key() {
        assert_eq!(
            err(r#"{"quantize_bits": {"start_bits": "12"}}"#),
            "config key `quantize_bits.start_bits` must be an integer, found \"12\""
        );
        assert_eq!(
            err(r#"{"quantize_training": {"enabled": 1}}"#),
            "config key `quantize_training.enabled` must be true or false, found 1"
        );
        assert_eq!(
            err(r#"{"quantize_training": []}"#),
            "config key `quantize_training` must be an object, found []"
        );
        assert_eq!(
            err(r#"{"quantize_algo": {"rounding": "up"}}"#),
            "config key `quantize_algo.rounding` = \"up\": expected one of nearest, stochastic"
        );
        assert!(err("{not json").starts_with("config is not valid JSON"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        assert_eq!(
            err(r#"{"quantize_bits": {"start_bits": 8, "target_bits": 12}}"#),
            "config key `quantize_bits.target_bits` = 12: must not exceed start_bits (8)"
        );
        assert_eq!(
            err(r#"{"quantize_bits": {"start_bits": 17}}"#),
            "config key `quantize_bits.start_bits` = 17: bits must be between 1 and 16"
        );
        assert_eq!(
            err(r#"{"quantize_bits": {"target_bits": 0}}"#),
            "config key `quantize_bits.target_bits` = 0: bits must be between 1 and 16"
        );
        assert_eq!(
            err(r#"{"quantize_training": {"quantize_schedule": {"quantize_period": 0}}}"#),
            "config key `quantize_training.quantize_schedule.quantize_period` = 0: must be at least 1"
        );
        assert_eq!(
            err(r#"{"quantize_groups": 0}"#),
            "config key `quantize_groups` = 0: must be at least 1"
        );
        assert_eq!(
            err(r#"{"quantize_groups": -3}"#),
            "config key `quantize_groups` = -3: must not be negative"
        );
        assert!(
            err(r#"{"quantize_bits": {"start_bits": 8, "target_bits": 2}, "quantize_type": "asymmetric"}"#)
                .contains("symmetric only")
        );
        assert!(
            err(r#"{"quantize_bits": {"start_bits": 8, "target_bits": 1}, "quantize_algo": {"rounding": "stochastic"}}"#)
                .contains("nearest only")
        );
        for ratio in ["0", "1.5", "-0.1"] {
            assert!(
                err(&format!(
                    r#"{{"fp16_mixed_quantize": {{"quantize_change_ratio": {ratio}}}}}"#
                ))
                .contains("quantize_change_ratio"),
                "{ratio}"
            );
        }
    }

    #[test]
    fn json_round_trip_and_builder() {
        let cfg = QuantizeConfig::builder()
            .bits(12, 4)
            .period(7)
            .schedule_offset(3)
            .groups(16)
            .quant_type(QuantType::Asymmetric)
            .rounding(Rounding::Stochastic)
            .mixing(0.01)
            .verbose(true)
            .build()
            .unwrap();
        let text =
            serde_json::to_string(&json!({ "quantize_training": cfg.to_json_value() })).unwrap();
        assert_eq!(QuantizeConfig::from_json_str(&text).unwrap(), cfg);
        assert!(QuantizeConfig::builder().groups(0).build().is_err());
    }

    #[test]
    fn suggestions_are_close_only() {
        assert_eq!(
            suggest("quantize_period", SCHEDULE_KEYS).as_deref(),
            Some("quantize_period")
        );
        assert_eq!(suggest("zzzz", SCHEDULE_KEYS), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

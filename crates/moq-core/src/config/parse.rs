//! Reading DeepSpeed's JSON: a whole `ds_config` or the section alone, every key checked (an
//! unknown key gets the nearest known one), and writing the section back.

use serde_json::{Map, Value, json};

use super::{EigenvalueConfig, MAX_BITS, QuantType, QuantizeConfig, Rounding};
use crate::error::{MoqError, Result};

const SECTION: &str = "quantize_training";
/// Our own section, beside DeepSpeed's, so DeepSpeed configs stay as they are.
const MOQ_SECTION: &str = "moq";
const MOQ_KEYS: &[&str] = &["deadline"];
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
    /// Reads a whole DeepSpeed config or the `quantize_training` section alone. A key given
    /// twice in one object is an error naming it.
    pub fn from_json_str(text: &str) -> Result<Self> {
        // Duplicate keys are refused: serde_json alone would keep the last one silently.
        let value = crate::input::json::parse_unique(text).map_err(|e| MoqError::Json {
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
        let moq_section = top.get(SECTION).and(top.get(MOQ_SECTION));
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
        if prefix.is_empty() && section.contains_key(MOQ_SECTION) {
            return Err(MoqError::InvalidValue {
                key: MOQ_SECTION.into(),
                value: short(&section[MOQ_SECTION]),
                reason: format!(
                    "the `{MOQ_SECTION}` section goes beside `{SECTION}`, in a whole config: \
                     {{\"{SECTION}\": {{…}}, \"{MOQ_SECTION}\": {{…}}}}"
                ),
            });
        }
        let mut cfg = parse_section(section, &prefix)?;
        if let Some(moq) = moq_section {
            let obj = as_object(moq, MOQ_SECTION)?;
            check_keys(obj, &format!("{MOQ_SECTION}."), MOQ_KEYS)?;
            if let Some(v) = obj.get("deadline") {
                cfg.deadline = Some(as_u64(v, &format!("{MOQ_SECTION}.deadline"))?);
            }
            let period_given = section
                .get("quantize_schedule")
                .and_then(Value::as_object)
                .is_some_and(|o| o.contains_key("quantize_period"));
            if let (Some(deadline), true) = (cfg.deadline, period_given) {
                return Err(MoqError::InvalidValue {
                    key: format!("{MOQ_SECTION}.deadline"),
                    value: deadline.to_string(),
                    reason: format!(
                        "`{prefix}quantize_schedule.quantize_period` is set too: with a deadline \
                         the deadline places every drop and the period is not used; remove one"
                    ),
                });
            }
        }
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

    /// A whole config: `quantize_training` (every key, see [`QuantizeConfig::to_json_value`]),
    /// and the `moq` section when one of its keys is set. Reading it back gives `self`, except
    /// that with a deadline `quantize_period` is left out (the deadline schedule does not use
    /// it, and a config giving both is refused), so it reads back as DeepSpeed's default.
    pub fn to_config_json(&self) -> Value {
        let mut section = self.to_json_value();
        let mut top = Map::new();
        if let Some(deadline) = self.deadline {
            // The period is not used with a deadline, and the two together are refused.
            section["quantize_schedule"]
                .as_object_mut()
                .expect("written above")
                .remove("quantize_period");
            top.insert(MOQ_SECTION.into(), json!({ "deadline": deadline }));
        }
        top.insert(SECTION.into(), section);
        Value::Object(top)
    }

    /// The `quantize_training` section as DeepSpeed JSON (every key written, so the file
    /// documents the run); our own `moq` section is not in it ([`QuantizeConfig::to_config_json`]).
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
}

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
        parse_bits(v, &key("quantize_bits"), &mut cfg)?;
    }
    if let Some(v) = section.get("quantize_schedule") {
        parse_schedule(v, &key("quantize_schedule"), &mut cfg)?;
    }
    if let Some(v) = section.get("quantize_groups") {
        cfg.groups = as_usize(v, &key("quantize_groups"))?;
    }
    let outer_type = match section.get("quantize_type") {
        Some(v) => Some(as_quant_type(v, &key("quantize_type"))?),
        None => None,
    };
    let inner_type = match section.get("quantize_algo") {
        Some(v) => parse_algo(v, &key("quantize_algo"), &mut cfg)?,
        None => None,
    };
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
        parse_mixing(v, &key("fp16_mixed_quantize"), &mut cfg)?;
    }
    if let Some(v) = section.get("eigenvalue") {
        let path = key("eigenvalue");
        let partial = parse_eigen(as_object(v, &path)?, &format!("{path}."))?;
        cfg.eigenvalue = partial.merge(PartialEigen::default(), "", "")?;
    }
    Ok(cfg)
}

/// `quantize_bits` (at `path`): start and target bits.
fn parse_bits(v: &Value, path: &str, cfg: &mut QuantizeConfig) -> Result<()> {
    let obj = as_object(v, path)?;
    check_keys(obj, &format!("{path}."), BITS_KEYS)?;
    if let Some(v) = obj.get("start_bits") {
        cfg.start_bits = as_bits(v, &format!("{path}.start_bits"))?;
    }
    if let Some(v) = obj.get("target_bits") {
        cfg.target_bits = as_bits(v, &format!("{path}.target_bits"))?;
    }
    Ok(())
}

/// `quantize_schedule` (at `path`): the period and the offset.
fn parse_schedule(v: &Value, path: &str, cfg: &mut QuantizeConfig) -> Result<()> {
    let obj = as_object(v, path)?;
    check_keys(obj, &format!("{path}."), SCHEDULE_KEYS)?;
    if let Some(v) = obj.get("quantize_period") {
        cfg.period = as_u64(v, &format!("{path}.quantize_period"))?;
    }
    if let Some(v) = obj.get("schedule_offset") {
        cfg.schedule_offset = as_u64(v, &format!("{path}.schedule_offset"))?;
    }
    Ok(())
}

/// `quantize_algo` (at `path`): the rounding, and the grid type it names, if any.
fn parse_algo(v: &Value, path: &str, cfg: &mut QuantizeConfig) -> Result<Option<QuantType>> {
    let obj = as_object(v, path)?;
    check_keys(obj, &format!("{path}."), ALGO_KEYS)?;
    let mut inner_type = None;
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
    Ok(inner_type)
}

/// `fp16_mixed_quantize` (at `path`): mixing on or off, and its change ratio.
fn parse_mixing(v: &Value, path: &str, cfg: &mut QuantizeConfig) -> Result<()> {
    let obj = as_object(v, path)?;
    check_keys(obj, &format!("{path}."), MIXING_KEYS)?;
    if let Some(v) = obj.get("enabled") {
        cfg.mixing.enabled = as_bool(v, &format!("{path}.enabled"))?;
    }
    if let Some(v) = obj.get("quantize_change_ratio") {
        cfg.mixing.change_ratio = as_f64(v, &format!("{path}.quantize_change_ratio"))?;
    }
    Ok(())
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
            // JSON reads an integer beyond 64 bits as a float: it is an integer, out of range.
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 => Err(MoqError::InvalidValue {
                    key: key.to_string(),
                    value: n.to_string(),
                    reason: if f < 0.0 {
                        "must not be negative".into()
                    } else {
                        format!("out of range (at most {})", u64::MAX)
                    },
                }),
                _ => Err(wrong(key, "an integer", v)),
            },
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
    fn a_key_given_twice_is_refused_by_its_path() {
        let e = QuantizeConfig::from_json_str(
            r#"{"quantize_training": {"quantize_bits": {"start_bits": 99, "start_bits": 12}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("duplicate key `quantize_training.quantize_bits.start_bits`"),
            "{e}"
        );
        // The same key in two different objects is not a repeat.
        QuantizeConfig::from_json_str(
            r#"{"quantize_training": {"enabled": true, "eigenvalue": {"enabled": true}}}"#,
        )
        .unwrap();
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
        // Integers beyond 64 bits, which JSON reads as floats, are named as out of range.
        let period = |n: &str| {
            err(&format!(
                r#"{{"quantize_training": {{"quantize_schedule": {{"quantize_period": {n}}}}}}}"#
            ))
        };
        let key = "config key `quantize_training.quantize_schedule.quantize_period`";
        assert_eq!(
            period("18446744073709551616"),
            format!("{key} = 1.8446744073709552e+19: out of range (at most 18446744073709551615)")
        );
        assert_eq!(
            period("-18446744073709551616"),
            format!("{key} = -1.8446744073709552e+19: must not be negative")
        );
        assert_eq!(
            period("2.5"),
            format!("{key} must be an integer, found 2.5")
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
        let text = serde_json::to_string(&cfg.to_config_json()).unwrap();
        assert_eq!(QuantizeConfig::from_json_str(&text).unwrap(), cfg);
        assert!(QuantizeConfig::builder().groups(0).build().is_err());
        // With a deadline: the `moq` section is written, the unused period left out.
        let cfg = QuantizeConfig::builder()
            .bits(12, 4)
            .schedule_offset(3)
            .deadline(300)
            .build()
            .unwrap();
        let json = cfg.to_config_json();
        assert_eq!(json["moq"]["deadline"], 300);
        assert!(json["quantize_training"]["quantize_schedule"]["quantize_period"].is_null());
        assert_eq!(QuantizeConfig::from_json_value(&json).unwrap(), cfg);
    }

    #[test]
    fn the_moq_section_sits_beside_deepspeeds() {
        let cfg = QuantizeConfig::from_json_str(
            r#"{"train_batch_size": 8, "quantize_training": {"quantize_bits": {"start_bits": 12, "target_bits": 4},
                "quantize_schedule": {"schedule_offset": 10}}, "moq": {"deadline": 400}}"#,
        )
        .unwrap();
        assert_eq!(cfg.deadline, Some(400));
        // Without it, nothing changes (DeepSpeed configs as they are).
        let plain = QuantizeConfig::from_json_str(r#"{"quantize_training": {}}"#).unwrap();
        assert_eq!(plain.deadline, None);
        assert_eq!(
            err(r#"{"quantize_training": {}, "moq": {"dead_line": 400}}"#),
            "unknown config key `moq.dead_line` (did you mean `deadline`?)"
        );
        assert!(
            err(r#"{"quantize_training": {}, "moq": {"deadline": -1}}"#).contains("moq.deadline")
        );
        assert!(err(r#"{"quantize_training": {}, "moq": 3}"#).contains("`moq`"));
        // Inside the section, or alone with the section's keys: pointed to its place.
        assert!(
            err(r#"{"quantize_bits": {"start_bits": 12}, "moq": {"deadline": 400}}"#)
                .contains("goes beside `quantize_training`")
        );
        assert!(
            err(r#"{"quantize_training": {"moq": {"deadline": 400}}}"#)
                .contains("quantize_training.moq")
        );
        // A deadline with a period: ambiguous, refused.
        let both = err(
            r#"{"quantize_training": {"quantize_schedule": {"quantize_period": 50}}, "moq": {"deadline": 400}}"#,
        );
        assert!(
            both.contains("moq.deadline") && both.contains("quantize_period"),
            "{both}"
        );
        // Before quantization starts, or too soon for the drops.
        let early = err(
            r#"{"quantize_training": {"quantize_schedule": {"schedule_offset": 100}}, "moq": {"deadline": 50}}"#,
        );
        assert!(early.contains("before quantization starts"), "{early}");
        let tight = err(
            r#"{"quantize_training": {"quantize_bits": {"start_bits": 16, "target_bits": 4},
                "quantize_schedule": {"schedule_offset": 0}}, "moq": {"deadline": 10}}"#,
        );
        assert!(
            tight.contains("11 quantizing steps") && tight.contains("12 drops"),
            "{tight}"
        );
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

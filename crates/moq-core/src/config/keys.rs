//! The keys of the `quantize_training` section, each spelled once ([`KEYS`]): its path, the
//! field of [`QuantizeConfig`] it sets, and the range its value must lie in. Reading
//! ([`super::parse`]), writing back ([`QuantizeConfig::to_json_value`]), the checks of
//! [`QuantizeConfig::validate`] and the suggestions for an unknown key all walk this table.

use serde_json::Value;

use super::{MAX_BITS, QuantType, QuantizeConfig, Rounding};
use crate::error::{MoqError, Result};

/// A key of the section.
pub(super) struct Key {
    /// Its path under the section, objects joined by `.` (`quantize_bits.start_bits`).
    pub path: &'static str,
    /// What it holds, and where.
    pub field: Field,
    /// The range its value must lie in.
    pub rule: Rule,
    /// Another spelling of the key at this path (DeepSpeed accepts both): the two must agree,
    /// and only the other is written back.
    pub alias_of: Option<&'static str>,
}

/// The field of [`QuantizeConfig`] a key sets, by type.
#[derive(Clone, Copy)]
pub(super) enum Field {
    Bool(fn(&mut QuantizeConfig) -> &mut bool),
    Bits(fn(&mut QuantizeConfig) -> &mut u32),
    U32(fn(&mut QuantizeConfig) -> &mut u32),
    U64(fn(&mut QuantizeConfig) -> &mut u64),
    Usize(fn(&mut QuantizeConfig) -> &mut usize),
    F64(fn(&mut QuantizeConfig) -> &mut f64),
    Str(fn(&mut QuantizeConfig) -> &mut String),
    Grid(fn(&mut QuantizeConfig) -> &mut QuantType),
    Rounding(fn(&mut QuantizeConfig) -> &mut Rounding),
}

/// The range a key's value must lie in, checked by [`QuantizeConfig::validate`].
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Rule {
    Any,
    /// An integer ≥ 1.
    AtLeastOne,
    /// A finite number > 0.
    Positive,
    /// A finite number ≥ 0.
    NonNegative,
    /// A number in (0, 1].
    Fraction,
    /// A width in 1..=16.
    Bits,
}

/// `Key { path, field: Field::$kind(accessor of $field), rule }`.
macro_rules! key {
    ($path:literal, $kind:ident, $ty:ty, $($field:ident).+, $rule:ident) => {
        key!($path, $kind, $ty, $($field).+, $rule, None)
    };
    ($path:literal, $kind:ident, $ty:ty, $($field:ident).+, $rule:ident, $alias:expr) => {
        Key {
            path: $path,
            field: Field::$kind({
                fn field(c: &mut QuantizeConfig) -> &mut $ty {
                    &mut c.$($field).+
                }
                field
            }),
            rule: Rule::$rule,
            alias_of: $alias,
        }
    };
}

/// Every key of the section, in the order they are read, checked and written.
#[rustfmt::skip]
pub(super) const KEYS: &[Key] = &[
    key!("enabled", Bool, bool, enabled, Any),
    key!("quantize_verbose", Bool, bool, verbose, Any),
    key!("quantizer_kernel", Bool, bool, quantizer_kernel, Any),
    key!("quantize_type", Grid, QuantType, quant_type, Any, Some("quantize_algo.q_type")),
    key!("quantize_bits.start_bits", Bits, u32, start_bits, Bits),
    key!("quantize_bits.target_bits", Bits, u32, target_bits, Bits),
    key!("quantize_schedule.quantize_period", U64, u64, period, AtLeastOne),
    key!("quantize_schedule.schedule_offset", U64, u64, schedule_offset, Any),
    key!("quantize_groups", Usize, usize, groups, AtLeastOne),
    key!("quantize_algo.q_type", Grid, QuantType, quant_type, Any),
    key!("quantize_algo.rounding", Rounding, Rounding, rounding, Any),
    key!("fp16_mixed_quantize.enabled", Bool, bool, mixing.enabled, Any),
    key!("fp16_mixed_quantize.quantize_change_ratio", F64, f64, mixing.change_ratio, Fraction),
    key!("eigenvalue.enabled", Bool, bool, eigenvalue.enabled, Any),
    key!("eigenvalue.verbose", Bool, bool, eigenvalue.verbose, Any),
    key!("eigenvalue.max_iter", U32, u32, eigenvalue.max_iter, AtLeastOne),
    key!("eigenvalue.tol", F64, f64, eigenvalue.tol, Positive),
    key!("eigenvalue.stability", F64, f64, eigenvalue.stability, NonNegative),
    key!("eigenvalue.gas_boundary_resolution", U64, u64, eigenvalue.gas_boundary_resolution, AtLeastOne),
    key!("eigenvalue.layer_name", Str, String, eigenvalue.layer_name, Any),
    key!("eigenvalue.layer_num", Usize, usize, eigenvalue.layer_num, Any),
];

/// The keys of our own `moq` section, beside DeepSpeed's (read by [`super::parse`]).
pub(super) const MOQ_KEYS: &[&str] = &["deadline"];

/// The keys one level below `parent` (`""`: the section's own keys), each once, in table order.
pub(super) fn children(parent: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for key in KEYS {
        let rest = match parent {
            "" => Some(key.path),
            _ => key
                .path
                .strip_prefix(parent)
                .and_then(|r| r.strip_prefix('.')),
        };
        if let Some(child) = rest.map(|r| r.split('.').next().unwrap_or(r))
            && !out.contains(&child)
        {
            out.push(child);
        }
    }
    out
}

impl Key {
    /// The last segment of the path.
    pub fn leaf(&self) -> &'static str {
        self.path.rsplit('.').next().unwrap_or(self.path)
    }

    /// Sets the field from `value`; an error names `name` (the key's full path).
    pub fn set(&self, cfg: &mut QuantizeConfig, value: &Value, name: &str) -> Result<()> {
        match self.field {
            Field::Bool(f) => *f(cfg) = as_bool(value, name)?,
            Field::Bits(f) => *f(cfg) = as_bits(value, name)?,
            Field::U32(f) => {
                *f(cfg) =
                    u32::try_from(as_u64(value, name)?).map_err(|_| out_of_range(name, value))?
            }
            Field::U64(f) => *f(cfg) = as_u64(value, name)?,
            Field::Usize(f) => *f(cfg) = as_usize(value, name)?,
            Field::F64(f) => *f(cfg) = as_f64(value, name)?,
            Field::Str(f) => *f(cfg) = as_str(value, name)?.to_string(),
            Field::Grid(f) => {
                *f(cfg) = match as_str(value, name)? {
                    "symmetric" => QuantType::Symmetric,
                    "asymmetric" => QuantType::Asymmetric,
                    other => return Err(bad_choice(name, other, &["symmetric", "asymmetric"])),
                }
            }
            Field::Rounding(f) => {
                *f(cfg) = match as_str(value, name)? {
                    "nearest" => Rounding::Nearest,
                    "stochastic" => Rounding::Stochastic,
                    other => return Err(bad_choice(name, other, &["nearest", "stochastic"])),
                }
            }
        }
        Ok(())
    }

    /// The field's value as JSON (`cfg` is only read: the accessors take `&mut`).
    pub fn get(&self, cfg: &mut QuantizeConfig) -> Value {
        match self.field {
            Field::Bool(f) => Value::from(*f(cfg)),
            Field::Bits(f) | Field::U32(f) => Value::from(*f(cfg)),
            Field::U64(f) => Value::from(*f(cfg)),
            Field::Usize(f) => Value::from(*f(cfg)),
            Field::F64(f) => Value::from(*f(cfg)),
            Field::Str(f) => Value::from(f(cfg).clone()),
            Field::Grid(f) => Value::from(f(cfg).as_str()),
            Field::Rounding(f) => Value::from(f(cfg).as_str()),
        }
    }

    /// Why the field's value breaks the key's rule, with the value as written, if it does.
    pub fn broken(&self, cfg: &mut QuantizeConfig) -> Option<(String, &'static str)> {
        let value = self.get(cfg);
        let n = value.as_f64().unwrap_or(f64::NAN);
        let reason = match self.rule {
            Rule::Any => return None,
            Rule::AtLeastOne => (n < 1.0).then_some("must be at least 1"),
            Rule::Positive => (!(n.is_finite() && n > 0.0)).then_some("must be positive"),
            Rule::NonNegative => (!(n.is_finite() && n >= 0.0)).then_some("must be ≥ 0"),
            Rule::Fraction => (!(n > 0.0 && n <= 1.0)).then_some("must be in (0, 1]"),
            Rule::Bits => {
                (!(1.0..=MAX_BITS as f64).contains(&n)).then_some("bits must be between 1 and 16")
            }
        }?;
        // A non-finite float is not JSON (`null`): it is written as Rust writes it.
        let written = match self.field {
            Field::F64(f) => f(cfg).to_string(),
            _ => value.to_string(),
        };
        Some((written, reason))
    }
}

/// A value as an error message quotes it: its JSON, cut at 40 characters.
pub(super) fn short(v: &Value) -> String {
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

pub(super) fn as_object<'a>(v: &'a Value, key: &str) -> Result<&'a serde_json::Map<String, Value>> {
    v.as_object().ok_or_else(|| wrong(key, "an object", v))
}

fn as_bool(v: &Value, key: &str) -> Result<bool> {
    v.as_bool().ok_or_else(|| wrong(key, "true or false", v))
}

fn as_str<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.as_str().ok_or_else(|| wrong(key, "a string", v))
}

pub(super) fn as_u64(v: &Value, key: &str) -> Result<u64> {
    let negative = |n: &serde_json::Number| MoqError::InvalidValue {
        key: key.to_string(),
        value: n.to_string(),
        reason: "must not be negative".into(),
    };
    let Value::Number(n) = v else {
        return Err(wrong(key, "an integer", v));
    };
    match (n.as_u64(), n.as_i64(), n.as_f64()) {
        (Some(n), _, _) => Ok(n),
        (None, Some(_), _) => Err(negative(n)),
        // JSON reads an integer beyond 64 bits as a float: it is an integer, out of range.
        (None, None, Some(f)) if f.fract() == 0.0 && f < 0.0 => Err(negative(n)),
        (None, None, Some(f)) if f.fract() == 0.0 => Err(MoqError::InvalidValue {
            key: key.to_string(),
            value: n.to_string(),
            reason: format!("out of range (at most {})", u64::MAX),
        }),
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

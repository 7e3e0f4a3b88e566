//! Reading DeepSpeed's JSON: a whole `ds_config` or the section alone, every key checked (an
//! unknown key gets the nearest known one), and writing the section back. The keys themselves
//! are the table in `config/keys.rs`.

use serde_json::{Map, Value, json};

use super::QuantizeConfig;
use super::keys::{KEYS, Key, MOQ_KEYS, as_object, as_u64, children, short};
use crate::error::{MoqError, Result};

const SECTION: &str = "quantize_training";
/// Our own section, beside DeepSpeed's, so DeepSpeed configs stay as they are.
const MOQ_SECTION: &str = "moq";

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
        } else if top.is_empty() || top.keys().any(|k| children("").contains(&k.as_str())) {
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
        let mut given = Given::default();
        read_keys(section, &prefix, "", &mut given)?;
        if top_eigen.is_some() {
            // DeepSpeed also reads `eigenvalue` beside the section: the two must agree.
            read_keys(top, "", "eigenvalue", &mut given)?;
        }
        let mut cfg = given.cfg;
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
        let mut config = self.clone();
        let mut section = Map::new();
        for key in KEYS.iter().filter(|k| k.alias_of.is_none()) {
            let (parents, leaf) = key.path.rsplit_once('.').unwrap_or(("", key.path));
            let mut object = &mut section;
            for parent in parents.split('.').filter(|p| !p.is_empty()) {
                object = object
                    .entry(parent)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("the table's objects hold no values");
            }
            object.insert(leaf.into(), key.get(&mut config));
        }
        Value::Object(section)
    }
}

/// The config as read so far, and each field's value with the key that gave it: a later key
/// for the same field (another spelling, or `eigenvalue` beside the section) must agree.
#[derive(Default)]
struct Given {
    cfg: QuantizeConfig,
    seen: Vec<(&'static str, String, Value)>,
}

/// Reads the keys under `only` (`""`: every key) from `root`, whose paths are written with the
/// prefix `p`: their objects' keys checked first, then each value in table order.
fn read_keys(root: &Map<String, Value>, p: &str, only: &str, given: &mut Given) -> Result<()> {
    match only {
        "" => check_objects(root, p, "")?,
        _ => {
            if let Some(v) = root.get(only) {
                check_objects(as_object(v, &format!("{p}{only}"))?, p, only)?;
            }
        }
    }
    for key in KEYS.iter().filter(|k| k.path.starts_with(only)) {
        if let Some(value) = lookup(root, key, p)? {
            read_key(key, value, &format!("{p}{}", key.path), given)?;
        }
    }
    Ok(())
}

/// Sets `key`'s field from `value` (given at `name`); an error if an earlier key set the same
/// field to another value.
fn read_key(key: &Key, value: &Value, name: &str, given: &mut Given) -> Result<()> {
    key.set(&mut given.cfg, value, name)?;
    let value = key.get(&mut given.cfg);
    let field = key.alias_of.unwrap_or(key.path);
    if let Some((_, first, first_value)) = given.seen.iter().find(|(f, ..)| *f == field)
        && *first_value != value
    {
        return Err(MoqError::Conflict {
            first: first.clone(),
            first_value: first_value.to_string(),
            second: name.to_string(),
            second_value: value.to_string(),
        });
    }
    given.seen.push((field, name.to_string(), value));
    Ok(())
}

/// The value at `key`'s path under `root`, if given; every object on the way must be one.
fn lookup<'a>(root: &'a Map<String, Value>, key: &Key, p: &str) -> Result<Option<&'a Value>> {
    let mut object = root;
    let mut path = String::new();
    let (parents, leaf) = key.path.rsplit_once('.').unwrap_or(("", key.path));
    for parent in parents.split('.').filter(|s| !s.is_empty()) {
        path = if path.is_empty() {
            parent.to_string()
        } else {
            format!("{path}.{parent}")
        };
        match object.get(parent) {
            Some(v) => object = as_object(v, &format!("{p}{path}"))?,
            None => return Ok(None),
        }
    }
    Ok(object.get(leaf))
}

/// Every key of `obj` (the object at `parent`, written with the prefix `p`) and of the objects
/// inside it is one the table has; an error names the first that is not.
fn check_objects(obj: &Map<String, Value>, p: &str, parent: &str) -> Result<()> {
    let known = children(parent);
    let at = |k: &str| match parent {
        "" => k.to_string(),
        _ => format!("{parent}.{k}"),
    };
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            return Err(MoqError::UnknownKey {
                key: format!("{p}{}", at(key)),
                suggestion: suggest(key, &known, parent),
            });
        }
    }
    for (key, value) in obj {
        let path = at(key);
        if let (false, Some(inner)) = (children(&path).is_empty(), value.as_object()) {
            check_objects(inner, p, &path)?;
        }
    }
    Ok(())
}

fn check_keys(obj: &Map<String, Value>, p: &str, known: &[&str]) -> Result<()> {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            return Err(MoqError::UnknownKey {
                key: format!("{p}{key}"),
                suggestion: suggest(key, known, "moq"),
            });
        }
    }
    Ok(())
}

/// The nearest known key, if it is close enough to be a likely typo; a key that belongs one
/// level down (for example `start_bits` directly in the section) is pointed to its place.
fn suggest(key: &str, known: &[&str], parent: &str) -> Option<String> {
    if parent.is_empty() && key != "enabled" {
        let below = KEYS
            .iter()
            .find(|k| k.path.contains('.') && k.leaf() == key);
        if let Some(below) = below {
            return Some(below.path.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QuantType, Rounding};

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
            suggest(
                "quantize_period",
                &children("quantize_schedule"),
                "quantize_schedule"
            )
            .as_deref(),
            Some("quantize_period")
        );
        assert_eq!(
            suggest("zzzz", &children("quantize_schedule"), "quantize_schedule"),
            None
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

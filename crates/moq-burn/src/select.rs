//! Module-path patterns: which parameters are quantized, which layer each belongs to, and which
//! bit group it is in.
//!
//! A parameter's path is its module path as burn's module derive names it, joined by dots, with
//! the parameter's field last: `encoder.layers.3.attn.query.weight`. A pattern is a dot-separated
//! list of segments that must match the start of a path:
//! - a plain segment matches itself;
//! - `*` matches any one segment;
//! - `**` matches any number of segments (including none);
//! - `{i}` matches a segment that is a number, and captures it as the layer index (layer patterns
//!   only).
//!
//! Because a pattern matches a prefix, `encoder.layers` selects every parameter below that
//! module, and `*.weight` or `**.weight` select parameters by field name.

use crate::error::{MoqBurnError, Result};

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
    AnyMany,
    Index,
}

/// A parsed module-path pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Parses a pattern; `{i}` is allowed only when `allow_index` is set, and then exactly once.
    pub fn parse(text: &str, allow_index: bool) -> Result<Self> {
        let bad = |reason: &str| MoqBurnError::BadPattern {
            pattern: text.to_string(),
            reason: reason.to_string(),
        };
        if text.trim().is_empty() {
            return Err(bad("empty pattern"));
        }
        let segments = text
            .split('.')
            .map(|s| match s {
                "" => Err(bad(
                    "empty segment (two dots in a row, or a leading/trailing dot)",
                )),
                "*" => Ok(Segment::Any),
                "**" => Ok(Segment::AnyMany),
                "{i}" if allow_index => Ok(Segment::Index),
                "{i}" => Err(bad("`{i}` is only meaningful in a layer pattern")),
                s if s.contains(['*', '{', '}']) => Err(bad(
                    "`*`, `**` and `{i}` must be whole segments between dots",
                )),
                s => Ok(Segment::Literal(s.to_string())),
            })
            .collect::<Result<Vec<_>>>()?;
        let indices = segments.iter().filter(|s| **s == Segment::Index).count();
        if allow_index && indices != 1 {
            return Err(bad(
                "a layer pattern needs exactly one `{i}` segment, as in `encoder.layers.{i}`",
            ));
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern matches the start of `path`.
    pub fn matches(&self, path: &str) -> bool {
        self.capture(path).is_some()
    }

    /// Matches the start of `path`; returns the `{i}` index when there is one (0 otherwise).
    pub fn capture(&self, path: &str) -> Option<usize> {
        let parts: Vec<&str> = path.split('.').collect();
        match_from(&self.segments, &parts)
    }
}

fn match_from(pattern: &[Segment], path: &[&str]) -> Option<usize> {
    let Some((first, rest)) = pattern.split_first() else {
        return Some(0);
    };
    match first {
        Segment::AnyMany => (0..=path.len()).find_map(|skip| match_from(rest, &path[skip..])),
        _ => {
            let (segment, tail) = path.split_first()?;
            let index = match first {
                Segment::Literal(l) => (l == segment).then_some(0)?,
                Segment::Any => 0,
                Segment::Index => segment.parse::<usize>().ok()?,
                Segment::AnyMany => unreachable!("handled above"),
            };
            match_from(rest, tail).map(|inner| {
                if *first == Segment::Index {
                    index
                } else {
                    inner
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_prefixes() {
        let p = PathPattern::parse("encoder.layers", false).unwrap();
        assert!(p.matches("encoder.layers.0.attn.weight"));
        assert!(!p.matches("encoder.layer_norm.weight"));
        let p = PathPattern::parse("**.weight", false).unwrap();
        assert!(p.matches("a.b.c.weight"));
        assert!(p.matches("weight"));
        assert!(!p.matches("a.b.bias"));
        let p = PathPattern::parse("*.fc.weight", false).unwrap();
        assert!(p.matches("head.fc.weight"));
        assert!(!p.matches("a.head.fc.weight"));
    }

    #[test]
    fn layer_index_is_captured() {
        let p = PathPattern::parse("encoder.layers.{i}", true).unwrap();
        assert_eq!(p.capture("encoder.layers.11.mlp.weight"), Some(11));
        assert_eq!(p.capture("encoder.layers.x.mlp.weight"), None);
        let p = PathPattern::parse("**.blocks.{i}.*.weight", true).unwrap();
        assert_eq!(p.capture("model.blocks.2.fc.weight"), Some(2));
    }

    #[test]
    fn malformed_patterns_are_errors() {
        for (text, index) in [
            ("", false),
            ("a..b", false),
            ("a.b*", false),
            ("a.{i}", false),
            ("a.b", true),
            ("{i}.{i}", true),
        ] {
            assert!(PathPattern::parse(text, index).is_err(), "{text}");
        }
    }
}

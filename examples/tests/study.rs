//! The study command end to end in its quick modes, on the real Brown corpus and
//! all-MiniLM-L6-v2 (`scripts/fetch-brown` and `scripts/fetch-minilm model` first; `scripts/test
//! study` fetches them and runs this): cells written, seeds split across two processes, a rerun
//! that resumes without training anything, the tables written from the cells of both; the two
//! sentence tasks' metrics where they must be.

use std::path::Path;
use std::process::Command;

fn study(dir: &Path, extra: &[&str]) -> String {
    run_task("charlm", dir, extra)
}

fn run_task(task: &str, dir: &Path, extra: &[&str]) -> String {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/data/brown");
    let output = Command::new(env!("CARGO_BIN_EXE_study"))
        .args([task, "--quick", "--corpus"])
        .arg(&corpus)
        .arg("--cells")
        .arg(dir.join("cells"))
        .arg("--models")
        .arg(dir.join("models"))
        .arg("--out")
        .arg(dir.join("results.md"))
        .args(extra)
        .output()
        .expect("the study binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "study {extra:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn trained(stdout: &str) -> usize {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('['))
        .count()
}

#[test]
fn the_quick_study_splits_resumes_and_tabulates() {
    let dir = tempfile::tempdir().unwrap();
    // The quick grid per seed: full precision, 2 widths × 6 methods, 4 longer, 2 swept.
    let per_seed = 1 + 12 + 4 + 2;
    let first = study(dir.path(), &["--seeds", "1"]);
    assert_eq!(trained(&first), per_seed, "{first}");
    let second = study(dir.path(), &["--first-seed", "1", "--seeds", "1"]);
    assert_eq!(trained(&second), per_seed, "{second}");
    let cells: Vec<_> = walk(&dir.path().join("cells"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(cells.len(), 2 * per_seed);

    // Both seeds' cells are there: a run over both trains nothing and tabulates them.
    let table = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    let again = study(dir.path(), &["--seeds", "2"]);
    assert_eq!(trained(&again), 0, "{again}");
    let resumed = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert_eq!(table, resumed, "the same cells give the same tables");
    for row in [
        "| full precision |",
        "| PTQ (full precision, rounded once) |",
        "| basic QAT (target bits from step 0) | ",
        "| MoQ + eigenvalue |",
        "| QAT + second-order bits |",
        "| MoQ + second-order bits |",
    ] {
        assert!(table.contains(row), "no row `{row}` in\n{table}");
    }
    // Two seeds: every non-reference cell of the main table carries a paired interval.
    let main = table.split("Export bytes").next().unwrap();
    assert_eq!(main.matches("(reference)").count(), 2, "{main}");
    assert_eq!(main.matches("<br>Δ ").count(), 6 * 2, "{main}");
    assert!(
        !table.contains("seeds)"),
        "every cell has both seeds:\n{table}"
    );
    let svg = dir.path().join("figures/study-charlm-frontier.svg");
    assert!(std::fs::read_to_string(svg).unwrap().contains("<svg"));

    // The second-order cells of a seed share their warm-up, so a process measures its Hessian
    // once (`EigenCache`): the 4-bit per-tensor cell of seed 1 came from the cache, and run
    // again alone, computing it, gives the same model to the bit.
    assert!(second.contains("from the cache"), "{second}");
    let name = "QatSecondOrder-4t-x1-lr1-seed1";
    let cached = quality(dir.path(), "charlm", name);
    let cell = cells
        .iter()
        .find(|p| p.to_string_lossy().contains(name))
        .unwrap();
    std::fs::remove_file(cell).unwrap();
    let alone = study(dir.path(), &["--seeds", "2"]);
    assert_eq!(trained(&alone), 1, "{alone}");
    assert!(!alone.contains("from the cache"), "{alone}");
    assert_eq!(quality(dir.path(), "charlm", name), cached);

    // A lost cell is run again, alone.
    let lost = cells
        .iter()
        .find(|p| p.to_string_lossy().contains("Moq-4t-x1-lr1-seed1"))
        .unwrap();
    std::fs::remove_file(lost).unwrap();
    let redo = study(dir.path(), &["--seeds", "2"]);
    assert_eq!(trained(&redo), 1, "{redo}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The metric of cell `name` of the only configuration under `dir/cells/task`.
fn quality(dir: &Path, task: &str, name: &str) -> (f64, Option<f64>) {
    let path = walk(&dir.join("cells").join(task))
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy() == format!("{name}.json"))
        })
        .unwrap_or_else(|| panic!("no cell {name}"));
    let cell: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    (
        cell["quality"].as_f64().unwrap(),
        cell.get("secondary").and_then(serde_json::Value::as_f64),
    )
}

#[test]
fn the_sentence_tasks_score_their_methods() {
    let dir = tempfile::tempdir().unwrap();
    let genre = run_task("genre", dir.path(), &["--seeds", "1", "--parts", "main"]);
    assert_eq!(trained(&genre), 7, "{genre}");
    for name in ["FullPrecision-fp32-x1-lr1-seed0", "Qat-3g128-x1-lr1-seed0"] {
        let (accuracy, none) = quality(dir.path(), "genre", name);
        assert!(
            (0.0..=1.0).contains(&accuracy) && none.is_none(),
            "{name}: {accuracy}"
        );
    }
    let distill = run_task("distill", dir.path(), &["--seeds", "1", "--parts", "main"]);
    assert_eq!(trained(&distill), 7, "{distill}");
    // The full-precision student starts as the teacher; rounding it to 3 bits moves it away.
    let (fp, fp_p5) = quality(dir.path(), "distill", "FullPrecision-fp32-x1-lr1-seed0");
    let (ptq, ptq_p5) = quality(dir.path(), "distill", "Ptq-3g128-x1-lr1-seed0");
    assert!(fp > 0.9 && fp <= 1.0 + 1e-4, "full precision: cosine {fp}");
    assert!(ptq < fp, "PTQ at 3 bits: cosine {ptq}, full precision {fp}");
    assert!(fp_p5.unwrap() <= fp && ptq_p5.unwrap() <= ptq);
    // A PTQ cell lost after its full-precision cell was written: the next process trains the
    // full-precision model again (a seed trains the same model) and rounds it to the same cell.
    let lost = walk(&dir.path().join("cells").join("distill"))
        .into_iter()
        .find(|p| p.ends_with("Ptq-3g128-x1-lr1-seed0.json"))
        .unwrap();
    std::fs::remove_file(lost).unwrap();
    let redo = run_task("distill", dir.path(), &["--seeds", "1", "--parts", "main"]);
    assert_eq!(trained(&redo), 1, "{redo}");
    assert!(redo.contains("trained again"), "{redo}");
    let (again, again_p5) = quality(dir.path(), "distill", "Ptq-3g128-x1-lr1-seed0");
    assert_eq!((again, again_p5), (ptq, ptq_p5), "{redo}");
    let table = std::fs::read_to_string(dir.path().join("results.md")).unwrap();
    assert!(
        table.contains("## Study: Brown genre classification"),
        "{table}"
    );
    assert!(
        table.contains("## Study: embedding distillation"),
        "{table}"
    );
    assert!(table.contains("5th percentile of the cosines"), "{table}");
}

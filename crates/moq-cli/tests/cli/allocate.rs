//! `moq allocate`: widths under a budget, checked against `moq_core::allocate` on the same
//! weights, and its errors.

use std::path::{Path, PathBuf};

use moq_core::allocate::{Budget, Overhead, allocate, measure};
use moq_core::{QuantSpec, QuantType, Rng};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::{assert_bad, moq, stderr, stdout, write};

/// `a` and `b`: the same 32×64 weights; `c`: 64×64 others; a bias and an integer tensor.
fn weights(dir: &Path) -> (PathBuf, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(99);
    let ab = rng.normal_vec(32 * 64, 0.05);
    let c = rng.normal_vec(64 * 64, 0.02);
    let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (ab_bytes, c_bytes, bias) = (le(&ab), le(&c), le(&[0.5; 64]));
    let ids: Vec<u8> = [1i64, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
    let views = [
        (
            "a",
            TensorView::new(Dtype::F32, vec![32, 64], &ab_bytes).unwrap(),
        ),
        (
            "b",
            TensorView::new(Dtype::F32, vec![32, 64], &ab_bytes).unwrap(),
        ),
        (
            "c",
            TensorView::new(Dtype::F32, vec![64, 64], &c_bytes).unwrap(),
        ),
        (
            "c.bias",
            TensorView::new(Dtype::F32, vec![64], &bias).unwrap(),
        ),
        ("ids", TensorView::new(Dtype::I64, vec![3], &ids).unwrap()),
    ];
    let path = dir.join("w.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    (path, ab, c)
}

/// A CSV row: tensor, params, bits, error.
type Row = (String, usize, u32, f64);

/// The CSV rows, the unquantized tensors and the average line of an output.
fn parse(text: &str) -> (Vec<Row>, Vec<String>, f64) {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("tensor,params,bits,error"), "{text}");
    let (mut rows, mut unquantized, mut average) = (Vec::new(), Vec::new(), f64::NAN);
    for line in lines {
        if let Some(name) = line.strip_prefix("unquantized: ") {
            unquantized.push(name.to_owned());
        } else if let Some(avg) = line.strip_prefix("average bits = ") {
            average = avg.parse().unwrap();
        } else {
            let f: Vec<&str> = line.split(',').collect();
            rows.push((
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            ));
        }
    }
    (rows, unquantized, average)
}

#[test]
fn allocate_matches_the_library_and_favours_the_sensitive_layer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (input, ab, c) = weights(d);
    let sens = write(d, "s.json", r#"{"a": 100.0, "b": 0.01}"#);
    let o = moq(&[
        "allocate",
        "--input",
        input.to_str().unwrap(),
        "--budget",
        "4",
        "--groups",
        "16",
        "--type",
        "asymmetric",
        "--bits",
        "3,4,6,8",
        "--sensitivity",
        sens.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (rows, unquantized, average) = parse(&stdout(&o));
    assert_eq!(unquantized, ["c.bias", "ids"]);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    // The same problem through the library.
    let base = QuantSpec::new(8, QuantType::Asymmetric, 16);
    let bits = [3, 4, 6, 8];
    let curves = [
        measure("a", &ab, [32, 64], 100.0, &base, &bits).unwrap(),
        measure("b", &ab, [32, 64], 0.01, &base, &bits).unwrap(),
        measure("c", &c, [64, 64], 1.0, &base, &bits).unwrap(),
    ];
    let plan = allocate(&curves, &Budget::AverageBits(4.0, Overhead::Excluded)).unwrap();
    let chosen: Vec<u32> = rows.iter().map(|r| r.2).collect();
    assert_eq!(chosen, plan.bits);
    for (row, curve) in rows.iter().zip(&curves) {
        assert_eq!(row.1, curve.params);
        let e = curve
            .options
            .iter()
            .find(|o| o.bits == row.2)
            .unwrap()
            .error;
        assert!((row.3 - e).abs() <= 1e-6 * e, "{row:?} against {e}");
    }
    assert!(
        chosen[0] > chosen[1],
        "the sensitive twin gets more bits: {chosen:?}"
    );
    assert!(average <= 4.0 && (average - plan.average_bits).abs() < 1e-4);

    // A byte budget: the exports of the chosen widths fit in it.
    let o = moq(&[
        "allocate",
        "--input",
        input.to_str().unwrap(),
        "--budget-bytes",
        "5000",
        "--groups",
        "16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (rows, _, _) = parse(&stdout(&o));
    let bytes: usize = rows
        .iter()
        .map(|(_, n, b, _)| {
            let rows_of = n / 64;
            let words = 64usize.div_ceil(32 / *b as usize) * rows_of;
            words * 4 + 16 * 4
        })
        .sum();
    assert!(bytes <= 5000, "{bytes} bytes for {rows:?}");
}

#[test]
fn allocate_refuses_what_cannot_be_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (input, _, _) = weights(d);
    let i = input.to_str().unwrap();
    let unknown = write(d, "unknown.json", r#"{"a": 1, "zz": 2}"#);
    let negative = write(d, "negative.json", r#"{"a": -1}"#);
    let twice = write(d, "twice.json", r#"{"a": 1, "a": 2}"#);
    let before = std::fs::read_dir(d).unwrap().count();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--budget", "1.5"],
            "a budget of 1.5 bits per weight is below the smallest candidate (2 bits",
        ),
        (
            vec!["--budget", "4", "--sensitivity", unknown.to_str().unwrap()],
            "--sensitivity names `zz`",
        ),
        (
            vec!["--budget", "4", "--sensitivity", negative.to_str().unwrap()],
            "`a` = -1: a sensitivity is a number ≥ 0",
        ),
        (
            vec!["--budget", "4", "--sensitivity", twice.to_str().unwrap()],
            "duplicate key `a`",
        ),
        (
            vec!["--budget", "4", "--bits", "0,4"],
            "--bits: 0 is outside 1..=16",
        ),
        (
            vec!["--budget", "4", "--groups", "7"],
            "tensor `a`: 2048 elements cannot be split into 7 equal groups",
        ),
        (
            vec!["--budget", "4", "--bits", "2,4", "--type", "asymmetric"],
            "symmetric only",
        ),
        (vec!["--budget-bytes", "10"], "below the smallest export"),
        (
            vec!["--budget", "4", "--budget-bytes", "10"],
            "--budget-bytes",
        ),
        (vec![], "--budget <BUDGET>"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["allocate", "--input", i];
        args.extend(extra);
        assert_bad(&moq(&args), expected, d, before);
    }
    let ints = d.join("ints.safetensors");
    let ids: Vec<u8> = [1i64, 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::I64, vec![2], &ids).unwrap();
    std::fs::write(
        &ints,
        safetensors::serialize([("ids", view)], None).unwrap(),
    )
    .unwrap();
    let before = std::fs::read_dir(d).unwrap().count();
    assert_bad(
        &moq(&[
            "allocate",
            "--input",
            ints.to_str().unwrap(),
            "--budget",
            "4",
        ]),
        "has no float tensor of rank ≥ 2",
        d,
        before,
    );
}

/// More layers than a schedule holds: refused by name before any tensor is measured (a file of
/// 65,537 one-weight tensors).
#[test]
fn more_layers_than_a_schedule_holds_are_refused_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let count = moq_core::Schedule::MAX_LAYERS + 1;
    let names: Vec<String> = (0..count).map(|i| format!("l{i}")).collect();
    let one = 0.5f32.to_le_bytes();
    let views = names.iter().map(|n| {
        (
            n.as_str(),
            TensorView::new(Dtype::F32, vec![1, 1], &one).unwrap(),
        )
    });
    let input = d.join("many.safetensors");
    std::fs::write(&input, safetensors::serialize(views, None).unwrap()).unwrap();
    let before = std::fs::read_dir(d).unwrap().count();
    let args = [
        "allocate",
        "--input",
        input.to_str().unwrap(),
        "--budget",
        "4",
    ];
    assert_bad(
        &moq(&args),
        "has 65537 float tensors of rank ≥ 2: at most 65536 (Schedule::MAX_LAYERS)",
        d,
        before,
    );
}

#[test]
fn asymmetric_grids_leave_out_the_default_widths_they_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _, _) = weights(dir.path());
    let i = input.to_str().unwrap();
    let out = moq(&[
        "allocate",
        "--input",
        i,
        "--budget",
        "4",
        "--type",
        "asymmetric",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("leaving out [2] bits"),
        "{}",
        stderr(&out)
    );
    let (rows, _, average) = parse(&stdout(&out));
    assert!(rows.iter().all(|r| r.2 >= 3), "{rows:?}");
    assert!(average <= 4.0 + 1e-9, "{average}");
}

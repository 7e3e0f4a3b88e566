//! End-to-end tests of the `moq` binary: each subcommand, and each kind of bad input.

mod allocate;
mod bounded;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use half::{bf16, f16};
use moq_core::{NoiseKey, QuantSpec, QuantType, QuantizeConfig, Schedule, fake_quantize};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn moq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moq"))
        .args(args)
        .output()
        .expect("run moq")
}

/// `moq schedule --config CONFIG EXTRA...`
fn schedule(config: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["schedule", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    moq(&args)
}

/// `moq quantize --input INPUT --output OUTPUT EXTRA...`
fn quantize(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "quantize",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    moq(&args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Asserts exit status 2, a single stderr line containing `needle`, and nothing left in `dir`
/// but the files that were there before.
fn assert_bad(o: &Output, needle: &str, dir: &Path, before: usize) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        before,
        "files left behind in {}",
        dir.display()
    );
}

const HAND_CONFIG: &str = r#"{"quantize_training": {"enabled": true,
    "quantize_bits": {"start_bits": 12, "target_bits": 8},
    "quantize_schedule": {"quantize_period": 10, "schedule_offset": 0}}}"#;

#[test]
fn schedule_csv_reproduces_hand_computed_drops() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "ds.json", HAND_CONFIG);
    let o = schedule(&config, &["--steps", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "step,layer,bits\n0,0,12\n9,0,11\n19,0,10\n39,0,9\n79,0,8\n"
    );
    // A run that stops before the last drop.
    let o = schedule(&config, &["--steps", "79"]);
    assert_eq!(
        stdout(&o),
        "step,layer,bits\n0,0,12\n9,0,11\n19,0,10\n39,0,9\n"
    );
}

#[test]
fn schedule_csv_matches_the_state_machine_with_eigenvalues() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"quantize_bits": {"start_bits": 16, "target_bits": 4},
        "quantize_schedule": {"quantize_period": 3, "schedule_offset": 7}}"#;
    let config = write(dir.path(), "section.json", text);
    let o = schedule(&config, &["--steps", "5000", "--eigenvalues", "0,0.3,0.99"]);
    assert!(o.status.success(), "{}", stderr(&o));

    let rows = machine_rows(text, &[0.0, 0.3, 0.99], 5000);
    assert_eq!(stdout(&o), csv(&rows));
}

/// `(step, layer, bits)` whenever a layer's bits change, as the state machine runs `config`
/// with fixed eigenvalues (one layer each) for `steps` steps: what `moq schedule` must print.
fn machine_rows(config: &str, eigenvalues: &[f32], steps: u64) -> Vec<(u64, usize, u32)> {
    let config = QuantizeConfig::from_json_str(config).unwrap();
    let mut machine = Schedule::new(&config, eigenvalues.len()).unwrap();
    machine.set_eigenvalues(eigenvalues).unwrap();
    let mut rows = Vec::new();
    let mut last = vec![None; eigenvalues.len()];
    for _ in 0..steps {
        let step = machine.step().step;
        for (layer, last) in last.iter_mut().enumerate() {
            if machine.bits(layer) != *last {
                *last = machine.bits(layer);
                rows.push((step, layer, last.unwrap()));
            }
        }
    }
    rows
}

/// The rows as `moq schedule`'s CSV.
fn csv(rows: &[(u64, usize, u32)]) -> String {
    let mut out = String::from("step,layer,bits\n");
    for (step, layer, bits) in rows {
        out.push_str(&format!("{step},{layer},{bits}\n"));
    }
    out
}

/// A deadline in the config's `moq` section (or from `--deadline`): the CSV is the state
/// machine's, every layer at its target by then; bad deadlines are one-line errors.
#[test]
fn schedule_with_a_deadline_matches_the_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"quantize_training": {"quantize_bits": {"start_bits": 12, "target_bits": 3},
        "quantize_schedule": {"schedule_offset": 20}}, "moq": {"deadline": 700}}"#;
    let config = write(dir.path(), "ds.json", text);
    let o = schedule(&config, &["--steps", "1000", "--eigenvalues", "0,0.6,1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = machine_rows(text, &[0.0, 0.6, 1.0], 1000);
    assert_eq!(stdout(&o), csv(&rows));
    // Every layer's last drop is at the deadline, the most sensitive layer's first the latest.
    let at_target: Vec<u64> = rows.iter().filter(|r| r.2 == 3).map(|r| r.0).collect();
    assert_eq!(at_target, [700, 700, 700]);
    let first_drop = |layer| rows.iter().find(|r| r.1 == layer && r.2 == 11).unwrap().0;
    assert!(first_drop(0) < first_drop(1) && first_drop(1) < first_drop(2));
    // --deadline sets it from the command line; the summary says what places the drops.
    let plain = write(
        dir.path(),
        "plain.json",
        r#"{"quantize_bits": {"start_bits": 12, "target_bits": 3}}"#,
    );
    let o = schedule(
        &plain,
        &["--steps", "3000", "--deadline", "2500", "--summary"],
    );
    let out = stdout(&o);
    assert!(
        out.contains("deadline step 2500") && out.contains("3 bits at step 2500"),
        "{out}"
    );
    // Before quantization starts (schedule_offset 1000), or with a period beside it.
    let o = schedule(&plain, &["--steps", "3000", "--deadline", "500"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("moq.deadline") && stderr(&o).contains("before quantization starts"),
        "{}",
        stderr(&o)
    );
    let both = write(
        dir.path(),
        "both.json",
        r#"{"quantize_training": {"quantize_schedule": {"quantize_period": 5}}, "moq": {"deadline": 3000}}"#,
    );
    let o = schedule(&both, &["--steps", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("quantize_period"), "{}", stderr(&o));
}

#[test]
fn schedule_summary_warns_with_a_period_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "ds.json", HAND_CONFIG);
    let o = schedule(&config, &["--steps", "50", "--layers", "2", "--summary"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("8 bits NOT REACHED"), "{out}");
    // 10·8 = 80 quantizing steps needed; with 50 steps, period 6 (6·8 = 48) is the largest.
    let warning = "warning: layer 0 ends at 9 bits, above its target of 8: reaching it takes 80 steps, \
                   the run has 50; quantize_period 6 or less";
    assert!(out.contains(warning), "{out}");
    let o = schedule(&config, &["--steps", "80", "--summary"]);
    assert!(stdout(&o).contains("every layer reaches its target within 80 steps"));
}

#[test]
fn schedule_plot_draws_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "ds.json", HAND_CONFIG);
    let svg = dir.path().join("schedule.svg");
    let o = schedule(
        &config,
        &[
            "--steps",
            "200",
            "--eigenvalues",
            "0,0.5,1",
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("step,layer,bits\n"),
        "the CSV is still printed"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..100]);
    assert!(text.contains("ds.json: 12 → 8 bits, period 10, offset 0"));
    for label in ["layer 0 (e = 0)", "layer 1 (e = 0.5)", "layer 2 (e = 1)"] {
        assert!(text.contains(label), "{label}");
    }
    // One staircase per layer, plus one legend sample each.
    assert!(
        text.matches("<polyline").count() >= 6,
        "{}",
        text.matches("<polyline").count()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&svg).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    let missing = dir.path().join("no/such/dir/plot.svg");
    let o = schedule(
        &config,
        &["--steps", "200", "--plot", missing.to_str().unwrap()],
    );
    assert_bad(&o, "cannot create a file in", dir.path(), before);
}

struct Fixture {
    dir: tempfile::TempDir,
    input: PathBuf,
    f32_weight: Vec<f32>,
    f16_weight: Vec<f16>,
    bf16_weight: Vec<bf16>,
    bias: Vec<f32>,
}

fn le<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

fn fixture(poison: Option<f32>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut f32_weight: Vec<f32> = (0..48)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013)
        .collect();
    if let Some(p) = poison {
        f32_weight[17] = p;
    }
    let f16_weight: Vec<f16> = (0..32)
        .map(|i| f16::from_f32((i as f32 * 0.7).sin()))
        .collect();
    let bf16_weight: Vec<bf16> = (0..32)
        .map(|i| bf16::from_f32((i as f32 * 0.3).cos()))
        .collect();
    let bias: Vec<f32> = vec![0.1, -0.2, 0.3, 0.123_456];
    let steps: Vec<i64> = vec![12, 13];
    let bytes = [
        le(&f32_weight, f32::to_le_bytes),
        le(&f16_weight, f16::to_le_bytes),
        le(&bf16_weight, bf16::to_le_bytes),
        le(&bias, f32::to_le_bytes),
        le(&steps, i64::to_le_bytes),
    ];
    let tensors = vec![
        (
            "enc.w",
            TensorView::new(Dtype::F32, vec![6, 8], &bytes[0]).unwrap(),
        ),
        (
            "enc.w16",
            TensorView::new(Dtype::F16, vec![4, 8], &bytes[1]).unwrap(),
        ),
        (
            "head.wb",
            TensorView::new(Dtype::BF16, vec![2, 2, 8], &bytes[2]).unwrap(),
        ),
        (
            "enc.b",
            TensorView::new(Dtype::F32, vec![4], &bytes[3]).unwrap(),
        ),
        (
            "step",
            TensorView::new(Dtype::I64, vec![2], &bytes[4]).unwrap(),
        ),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::serialize(tensors, Some(meta)).unwrap();
    let input = dir.path().join("in.safetensors");
    std::fs::write(&input, data).unwrap();
    Fixture {
        dir,
        input,
        f32_weight,
        f16_weight,
        bf16_weight,
        bias,
    }
}

fn read<T, const N: usize>(
    file: &SafeTensors,
    name: &str,
    dtype: Dtype,
    from: fn([u8; N]) -> T,
) -> Vec<T> {
    let view = file.tensor(name).unwrap();
    assert_eq!(view.dtype(), dtype, "{name}");
    view.data()
        .chunks_exact(N)
        .map(|c| from(c.try_into().unwrap()))
        .collect()
}

fn expected<T: moq_core::Element>(name: &str, x: &[T], spec: &QuantSpec) -> Vec<T> {
    let mut out = x.to_vec();
    fake_quantize(name, x, &mut out, spec).unwrap();
    out
}

#[test]
fn quantize_fake_quantizes_float_matrices_and_copies_the_rest() {
    let fx = fixture(None);
    let output = fx.dir.path().join("out.safetensors");
    let o = quantize(
        &fx.input,
        &output,
        &["--bits", "4", "--groups", "4", "--type", "asymmetric"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("3 tensor(s) fake-quantized to 4 bits"),
        "{}",
        stderr(&o)
    );
    let bytes = std::fs::read(&output).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let spec = QuantSpec::new(4, QuantType::Asymmetric, 4);
    let w = read(&file, "enc.w", Dtype::F32, f32::from_le_bytes);
    assert_eq!(w, expected("enc.w", &fx.f32_weight, &spec));
    assert_ne!(w, fx.f32_weight);
    let w16 = read(&file, "enc.w16", Dtype::F16, f16::from_le_bytes);
    assert_eq!(w16, expected("enc.w16", &fx.f16_weight, &spec));
    let wb = read(&file, "head.wb", Dtype::BF16, bf16::from_le_bytes);
    assert_eq!(wb, expected("head.wb", &fx.bf16_weight, &spec));
    assert_eq!(file.tensor("head.wb").unwrap().shape(), [2, 2, 8]);
    assert_eq!(
        read(&file, "enc.b", Dtype::F32, f32::from_le_bytes),
        fx.bias
    );
    assert_eq!(
        read(&file, "step", Dtype::I64, i64::from_le_bytes),
        [12, 13]
    );
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["format"], "pt");

    // --all includes the bias; stochastic rounding follows the seed.
    let o = quantize(
        &fx.input,
        &output,
        &[
            "--bits",
            "3",
            "--all",
            "--rounding",
            "stochastic",
            "--seed",
            "9",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&output).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    // Tensors are numbered by sorted name for their noise stream: enc.b is 0, enc.w is 1.
    let spec = QuantSpec::new(3, QuantType::Symmetric, 1);
    let noisy = |stream| {
        spec.stochastic(NoiseKey {
            seed: 9,
            step: 0,
            stream,
        })
    };
    let b = read(&file, "enc.b", Dtype::F32, f32::from_le_bytes);
    assert_eq!(b, expected("enc.b", &fx.bias, &noisy(0)));
    let w = read(&file, "enc.w", Dtype::F32, f32::from_le_bytes);
    assert_eq!(w, expected("enc.w", &fx.f32_weight, &noisy(1)));
}

#[test]
fn quantize_takes_type_groups_and_rounding_from_a_config() {
    let fx = fixture(None);
    let text = r#"{"quantize_training": {"quantize_groups": 2, "quantize_algo": {"q_type": "asymmetric"}}}"#;
    let config = write(fx.dir.path(), "ds.json", text);
    let output = fx.dir.path().join("out.safetensors");
    let o = quantize(
        &fx.input,
        &output,
        &["--bits", "5", "--config", config.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&output).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let spec = QuantSpec::new(5, QuantType::Asymmetric, 2);
    let w = read(&file, "enc.w", Dtype::F32, f32::from_le_bytes);
    assert_eq!(w, expected("enc.w", &fx.f32_weight, &spec));
}

#[test]
fn bad_input_exits_2_with_one_line_and_writes_nothing() {
    let fx = fixture(None);
    let dir = fx.dir.path();
    let input = fx.input.as_path();
    let out = dir.join("out.safetensors");
    let bad_json = write(dir, "bad.json", "{\"quantize_training\": {");
    let bad_key = write(
        dir,
        "key.json",
        r#"{"quantize_training": {"quantize_group": 2}}"#,
    );
    let garbage = write(dir, "garbage.safetensors", "this is not a safetensors file");
    let ok = write(dir, "ok.json", HAND_CONFIG);
    let before = std::fs::read_dir(dir).unwrap().count();

    let o = quantize(&dir.join("missing.safetensors"), &out, &["--bits", "8"]);
    assert_bad(&o, "cannot read `", dir, before);
    assert!(stderr(&o).contains("missing.safetensors"));

    let o = quantize(&garbage, &out, &["--bits", "8"]);
    assert_bad(
        &o,
        "garbage.safetensors` is not a valid safetensors file",
        dir,
        before,
    );

    let o = quantize(
        input,
        &out,
        &["--bits", "8", "--config", bad_json.to_str().unwrap()],
    );
    assert_bad(&o, "bad.json`: config is not valid JSON", dir, before);

    let o = schedule(&bad_key, &["--steps", "10"]);
    let message =
        "unknown config key `quantize_training.quantize_group` (did you mean `quantize_groups`?)";
    assert_bad(&o, message, dir, before);

    let o = quantize(input, &out, &["--bits", "8", "--groups", "5"]);
    assert_bad(
        &o,
        "tensor `enc.w`: 48 elements cannot be split into 5 equal groups",
        dir,
        before,
    );

    let o = quantize(input, &out, &["--bits", "17"]);
    assert_bad(&o, "17", dir, before);

    let o = quantize(input, &out, &["--bits", "8", "--typo"]);
    assert_bad(&o, "--typo", dir, before);

    let o = quantize(input, &out, &["--bits", "2", "--type", "asymmetric"]);
    assert_bad(&o, "symmetric only", dir, before);

    let o = schedule(&ok, &["--steps", "ten"]);
    assert_bad(&o, "ten", dir, before);

    let o = schedule(
        &ok,
        &["--steps", "9", "--layers", "2", "--eigenvalues", "0.5"],
    );
    assert_bad(&o, "--eigenvalues gives 1 values for 2 layers", dir, before);

    let o = schedule(&ok, &["--steps", "9", "--eigenvalues", "0.5,1.5"]);
    assert_bad(
        &o,
        "normalized eigenvalue 1.5 is not in [0, 1]",
        dir,
        before,
    );

    for poison in [f32::NAN, f32::INFINITY] {
        let fx = fixture(Some(poison));
        let dir = fx.dir.path();
        let before = std::fs::read_dir(dir).unwrap().count();
        let o = quantize(&fx.input, &dir.join("out.safetensors"), &["--bits", "8"]);
        assert_bad(&o, "tensor `enc.w`: element 17 is", dir, before);
    }
}

#[test]
fn existing_output_survives_a_failed_run() {
    let fx = fixture(Some(f32::NAN));
    let output = fx.dir.path().join("out.safetensors");
    std::fs::write(&output, b"previous result").unwrap();
    let o = quantize(&fx.input, &output, &["--bits", "8"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&output).unwrap(), b"previous result");
}

/// Fenced blocks of a markdown text: `(language, first line, last line, body)`.
fn fenced(text: &str) -> Vec<(String, usize, usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match (open.take(), line.trim_start().strip_prefix("```")) {
            (None, Some(tag)) => open = Some((tag.trim().to_string(), n, String::new())),
            (None, None) => {}
            (Some((lang, start, body)), Some(_)) => out.push((lang, start, n, body)),
            (Some((lang, start, mut body)), None) => {
                body.push_str(line);
                body.push('\n');
                open = Some((lang, start, body));
            }
        }
    }
    out
}

/// Every `moq …` command in a `sh` block of the guide and the README runs from the repository
/// root and succeeds; when a `text` block follows right after it, each of its lines is in the
/// output, so the documented output cannot drift.
#[test]
fn documented_commands_run_as_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.push(root.join("README.md"));
    let mut ran = 0;
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        let blocks = fenced(&text);
        for (i, (lang, start, end, body)) in blocks.iter().enumerate() {
            if lang != "sh" {
                continue;
            }
            for command in body.lines().filter_map(|l| l.trim().strip_prefix("moq ")) {
                let out = Command::new(env!("CARGO_BIN_EXE_moq"))
                    .args(command.split_whitespace())
                    .current_dir(&root)
                    .output()
                    .unwrap();
                let where_ = format!("{}:{}: `moq {command}`", page.display(), start + 2);
                assert!(out.status.success(), "{where_}: {}", stderr(&out));
                let all = format!("{}{}", stdout(&out), stderr(&out));
                if let Some((_, next, _, expected)) = blocks.get(i + 1).filter(|b| b.0 == "text")
                    && *next <= end + 2
                {
                    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
                        assert!(
                            all.contains(line),
                            "{where_}: output lacks `{line}`:\n{all}"
                        );
                    }
                }
                ran += 1;
            }
        }
    }
    assert!(ran >= 2, "only {ran} documented commands found");
}

/// A MoQ export holding `w` as the one quantized tensor `name`, in rows of `row_len`.
pub(crate) fn export_of(
    name: &str,
    w: &[f32],
    row_len: usize,
    spec: &QuantSpec,
) -> moq_core::export::MoqFile {
    use moq_core::{CodeLayout, ScaleFormat, pack, quantize};
    let q = quantize(name, w, spec).unwrap();
    moq_core::export::MoqFile {
        quantized: vec![moq_core::export::Exported {
            name: name.into(),
            shape: vec![w.len() / row_len, row_len],
            packed: pack(&q, row_len, CodeLayout::Packed32, ScaleFormat::F32).unwrap(),
        }],
        float: vec![],
    }
}

#[test]
fn inspect_prints_bits_groups_sizes_and_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let w: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut file = export_of(
        "fc.weight",
        &w,
        16,
        &QuantSpec::new(4, QuantType::Asymmetric, 8),
    );
    file.float
        .push(("fc.bias".into(), vec![16], vec![0.25; 16]));
    let path = dir.path().join("model.safetensors");
    file.save(&path).unwrap();
    let out = moq(&["inspect", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    // 16 rows of 2 words, 8 scales and 8 zero points: 128 + 32 + 32 bytes against 1024.
    let row = text.lines().find(|l| l.starts_with("fc.weight")).unwrap();
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        fields[2..],
        ["4", "asymmetric", "8", "192", "1024", "5.33x"],
        "{row}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("fc.bias") && l.contains(" f32 ")),
        "{text}"
    );
    assert!(
        text.contains("1 quantized and 1 f32 tensors: 256 bytes, 1088 in f32 (4.25x smaller)"),
        "{text}"
    );
    // Served: the codes, 8 f32 scales and 8 i32 zero points, and the bias in f32.
    assert!(
        text.contains(
            "served in MoqLinear layers (moq_burn::load_codes): 256 bytes on the device, 0.471 of \
             f16 (544) and 0.235 of f32 (1088)"
        ),
        "{text}"
    );
    assert!(!text.contains("served dequantized"), "{text}");

    // A 12-bit layer (a schedule that stopped early) is exported, inspected and served as f32.
    let wide = export_of(
        "fc.weight",
        &w,
        16,
        &QuantSpec::new(12, QuantType::Symmetric, 2),
    );
    wide.save(&path).unwrap();
    let text = stdout(&moq(&["inspect", path.to_str().unwrap()]));
    // Two 12-bit codes a word: 16 rows of 8 words and 2 scales.
    let row = text.lines().find(|l| l.starts_with("fc.weight")).unwrap();
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[2..6], ["12", "symmetric", "2", "520"], "{row}");
    assert!(
        text.contains("served dequantized (wider than 8 bits, or not 2-d): fc.weight"),
        "{text}"
    );

    // A safetensors file that is not a MoQ export, and a file that is not safetensors.
    let fx = fixture(None);
    let out = moq(&["inspect", fx.input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a moq export"),
        "{}",
        stderr(&out)
    );
    let junk = write(dir.path(), "junk.safetensors", "not safetensors");
    let out = moq(&["inspect", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("junk.safetensors"),
        "{}",
        stderr(&out)
    );
}

/// A layer count from a flag is bounded before anything is allocated (10M layers used to abort
/// on a 2 GB allocation, `usize::MAX` to panic with a capacity overflow).
#[test]
fn layer_counts_beyond_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "ds.json", HAND_CONFIG);
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    for layers in ["65537", "10000000", "18446744073709551615"] {
        let o = schedule(&config, &["--steps", "100", "--layers", layers]);
        assert_bad(&o, "a schedule holds at most 65536", dir.path(), before);
    }
    let o = schedule(
        &config,
        &["--steps", "10", "--layers", "65536", "--summary"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A stderr that cannot be written never turns an exit into a panic (status 101): a failure
/// keeps status 2, a success status 0 with its output written.
#[test]
fn an_unwritable_stderr_keeps_the_documented_exit_codes() {
    let Ok(full) = std::fs::File::create("/dev/full") else {
        // Not a Linux-like system: nothing to check.
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let o = Command::new(env!("CARGO_BIN_EXE_moq"))
        .args([
            "schedule",
            "--config",
            missing.to_str().unwrap(),
            "--steps",
            "10",
        ])
        .stderr(full.try_clone().unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let config = write(dir.path(), "ds.json", HAND_CONFIG);
    let svg = dir.path().join("s.svg");
    let o = Command::new(env!("CARGO_BIN_EXE_moq"))
        .args([
            "schedule",
            "--config",
            config.to_str().unwrap(),
            "--steps",
            "10",
        ])
        .args(["--plot", svg.to_str().unwrap()])
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(svg.exists());
}

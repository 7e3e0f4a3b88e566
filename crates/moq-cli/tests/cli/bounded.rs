//! Every input bounded: the reproducers of the bad-input survey as end-to-end tests of the
//! `moq` binary. Each must exit 2 with one line naming the fault, quickly, within bounded
//! memory, leaving no file behind; a signal must not leave a partial output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::{HAND_CONFIG, assert_bad, moq, quantize, schedule, stderr, write};

/// A finished `moq` run: exit code, stderr, and its peak resident memory in bytes.
struct Run {
    code: Option<i32>,
    stderr: String,
    peak_rss: u64,
}

/// Runs `moq args` to completion (killed after 60 s) and measures its peak resident set with
/// `wait4`'s resource usage. Linux counts in a child's `ru_maxrss` the parent's resident set
/// at the moment the child calls `exec` (std spawns with `vfork`, sharing the parent's memory
/// until then), so the figure is max(this test process's peak, the child's own peak); a
/// caller checking a bound must make sure this process stays below it (`own_peak_rss`).
// The child is reaped by `wait4`, which std's `Child` cannot do (it has no resource usage).
#[allow(clippy::zombie_processes)]
fn measured(args: &[&str]) -> Run {
    let child = capped(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run moq");
    let pid = child.id() as libc::pid_t;
    let mut pipe = child.stderr.expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut pipe, &mut s).unwrap();
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let start = Instant::now();
    loop {
        // SAFETY: polls our own, not yet reaped child, writing into the two locals above.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4");
        if start.elapsed() > Duration::from_secs(60) {
            // SAFETY: the child is not reaped yet, so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{args:?}: still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Run {
        code,
        stderr: reader.join().unwrap(),
        // ru_maxrss is in KiB on Linux.
        peak_rss: usage.ru_maxrss as u64 * 1024,
    }
}

/// Waits for `child` at most `limit`; kills it and fails the test beyond.
fn finishes_within(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `moq args` under a 4 GiB address-space limit (as the bad-input survey ran it), so that a
/// regression that reads without bound fails here instead of exhausting the machine.
fn capped(args: &[&str]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(env!("CARGO_BIN_EXE_moq"));
    c.args(args);
    // SAFETY: setrlimit is async-signal-safe, as code between fork and exec must be.
    unsafe {
        c.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &cap) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

fn spawn(args: &[&str]) -> Child {
    capped(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run moq")
}

/// A safetensors file of `header` (JSON) and `data`, written as the format says.
fn raw_safetensors(dir: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// One f32 matrix `w` of `rows × cols` values, in a safetensors file, written a row at a time
/// (so this test process never holds it: see [`measured`]).
fn matrix_file(dir: &Path, name: &str, rows: usize, cols: usize) -> PathBuf {
    use std::io::Write;
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{rows},{cols}],"data_offsets":[0,{}]}}}}"#,
        rows * cols * 4
    );
    let path = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    for r in 0..rows {
        let row: Vec<u8> = (0..cols)
            .flat_map(|c| (((r * cols + c) % 1000) as f32 * 1e-3 - 0.5).to_le_bytes())
            .collect();
        f.write_all(&row).unwrap();
    }
    f.flush().unwrap();
    path
}

/// This process's peak resident set (VmHWM), in bytes.
fn own_peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

/// Class 1: whole files read before any check. Devices are refused before they are read, a
/// config above 1 MiB is refused unread, and a safetensors file whose header does not cover
/// the file is refused without reading its tail.
#[test]
fn oversized_and_endless_files_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out.safetensors");
    let before = count(d);
    let out_arg = out.to_str().unwrap();
    for args in [
        vec!["schedule", "--config", "/dev/zero", "--steps", "10"],
        vec![
            "quantize",
            "--input",
            "/dev/urandom",
            "--output",
            out_arg,
            "--bits",
            "8",
        ],
        vec!["inspect", "/dev/zero"],
    ] {
        let o = finishes_within(spawn(&args), Duration::from_secs(10), &args.join(" "));
        assert_bad(
            &o,
            "a character device; only regular files are read",
            d,
            before,
        );
    }
    let big = write(d, "big.json", &" ".repeat((1 << 20) + 1));
    let before = count(d);
    let o = schedule(&big, &["--steps", "10"]);
    assert_bad(&o, "1048577 bytes; at most 1048576 are read", d, before);

    // A valid header for one 2×2 f32 tensor, then a sparse 1 GiB tail.
    let path = raw_safetensors(
        d,
        "tail.safetensors",
        r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
        &[0; 16],
    );
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let before = count(d);
    for args in [
        vec![
            "quantize",
            "--input",
            path.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--bits",
            "8",
        ],
        vec!["inspect", path.to_str().unwrap()],
    ] {
        let run = measured(&args);
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(
            run.stderr.contains("the tensors end at data byte 16"),
            "{}",
            run.stderr
        );
        assert!(
            run.peak_rss < 64 << 20,
            "{args:?}: peak RSS {} MiB for a file it must not read",
            run.peak_rss >> 20
        );
    }
    assert_eq!(count(d), before);
}

/// Class 1, the valid case: `quantize` of a 64 MiB f32 tensor peaks at about one copy of it
/// (the floor: the tensor must be in memory to find its groups' ranges), not four.
#[test]
fn quantize_memory_follows_the_largest_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tensor = 64usize << 20;
    let input = matrix_file(d, "big.safetensors", 4096, tensor / 4 / 4096);
    let out = d.join("out.safetensors");
    let run = measured(&[
        "quantize",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--bits",
        "8",
        "--groups",
        "4096",
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let inherited = own_peak_rss();
    // The binary's own footprint (code, threads, buffers) is a few MiB; the old path held the
    // file, its values, their copy and the serialized output at once (4×).
    let bound = tensor as u64 * 5 / 4 + (16 << 20);
    assert!(
        inherited < bound,
        "this test process peaked at {} MiB, above the bound: the measurement says nothing",
        inherited >> 20
    );
    assert!(
        run.peak_rss <= bound,
        "peak RSS {} MiB for a {} MiB tensor (bound {} MiB)",
        run.peak_rss >> 20,
        tensor >> 20,
        bound >> 20
    );
    let back = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&back).unwrap();
    assert_eq!(st.tensor("w").unwrap().shape(), [4096, tensor / 4 / 4096]);
}

/// `inspect` reads an export's header, scales and zero points, not its codes: a 64 MiB export
/// is inspected in a few MiB.
#[test]
fn inspect_memory_follows_the_scales_not_the_codes() {
    use std::collections::BTreeMap;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rows, cols, groups) = (4096usize, 32768usize, 4096usize);
    let words = rows * cols / 8;
    let meta = format!(
        r#"{{"version":1,"tensors":{{"w":{{"shape":[{rows},{cols}],"bits":4,"quant_type":"symmetric","groups":{groups},"layout":"Packed32"}}}}}}"#
    );
    let header = moq_core::input::safetensors_header(
        &[
            ("w.codes", Dtype::U32, &[words]),
            ("w.scales", Dtype::F32, &[groups]),
        ],
        Some(&BTreeMap::from([("moq".to_string(), meta)])),
    )
    .unwrap();
    let path = d.join("big-export.safetensors");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(&header).unwrap();
    let chunk = vec![0x77u8; 1 << 20];
    for _ in 0..words * 4 / chunk.len() {
        f.write_all(&chunk).unwrap();
    }
    for _ in 0..groups {
        f.write_all(&0.01f32.to_le_bytes()).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let run = measured(&["inspect", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let bound = 40u64 << 20;
    let inherited = own_peak_rss();
    assert!(
        inherited < bound,
        "this test process peaked at {} MiB, above the bound: the measurement says nothing",
        inherited >> 20
    );
    assert!(
        run.peak_rss < bound,
        "inspect of a {} MiB export peaked at {} MiB",
        (words * 4) >> 20,
        run.peak_rss >> 20
    );
}

/// Class 2: a FIFO is refused at once for each subcommand (opening one blocks until a writer
/// appears, so it is never opened).
#[test]
fn fifos_are_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let f = fifo.to_str().unwrap();
    let out = d.join("out.safetensors");
    for args in [
        vec!["schedule", "--config", f, "--steps", "10"],
        vec![
            "quantize",
            "--input",
            f,
            "--output",
            out.to_str().unwrap(),
            "--bits",
            "8",
        ],
        vec!["inspect", f],
    ] {
        let o = finishes_within(spawn(&args), Duration::from_secs(10), &args.join(" "));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("a FIFO; only regular files are read"), "{err}");
    }
    assert!(!out.exists());
}

/// A MoQ export of one 16×16 weight at 4 bits (8 groups), with its metadata JSON and scales
/// passed through `tamper` before it is written.
fn tampered_export(dir: &Path, name: &str, tamper: impl Fn(&mut String, &mut Vec<f32>)) -> PathBuf {
    use moq_core::{QuantSpec, QuantType};
    let w: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
    let file = crate::export_of("w", &w, 16, &QuantSpec::new(4, QuantType::Symmetric, 8));
    let path = dir.join(name);
    file.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut meta = header.metadata().as_ref().unwrap()["moq"].clone();
    let mut scales: Vec<f32> = st
        .tensor("w.scales")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    tamper(&mut meta, &mut scales);
    let codes = st.tensor("w.codes").unwrap();
    let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    let views = [
        ("w.codes", codes),
        (
            "w.scales",
            TensorView::new(Dtype::F32, vec![scales.len()], &scale_bytes).unwrap(),
        ),
    ];
    let info = HashMap::from([("moq".to_string(), meta)]);
    std::fs::write(&path, safetensors::serialize(views, Some(info)).unwrap()).unwrap();
    path
}

/// Class 5 and `inspect`'s trust: sizes from a file are checked arithmetic, and a tampered
/// export (a layout that is not the codes', bad scales) is refused naming the tensor.
#[test]
fn inspect_refuses_impossible_or_tampered_exports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let untouched = tampered_export(d, "ok.safetensors", |_, _| {});
    let o = moq(&["inspect", untouched.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    type Tamper = Box<dyn Fn(&mut String, &mut Vec<f32>)>;
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "huge.safetensors",
            Box::new(|m, _| *m = m.replace("[16,16]", "[9223372036854775809,2]")),
            "`w`: shape [9223372036854775809, 2] overflows",
        ),
        (
            "wrap.safetensors",
            Box::new(|m, _| *m = m.replace("[16,16]", "[4294967296,4294967296,8]")),
            "`w`: shape [4294967296, 4294967296, 8] overflows",
        ),
        (
            "int8.safetensors",
            Box::new(|m, _| *m = m.replace("Packed32", "Int8")),
            "`w`: layout Int8; exports hold Packed32 codes",
        ),
        (
            "rows.safetensors",
            Box::new(|m, _| *m = m.replace("[16,16]", "[32,16]")),
            "`w`: shape [32, 16] at 4 bits needs 64 code words, `w.codes` holds 32",
        ),
        (
            "nan.safetensors",
            Box::new(|_, s| s[3] = f32::NAN),
            "`w`: scale 3 is NaN",
        ),
        (
            "inf.safetensors",
            Box::new(|_, s| s[0] = f32::INFINITY),
            "`w`: scale 0 is inf",
        ),
        (
            "negative.safetensors",
            Box::new(|_, s| s[7] = -0.5),
            "`w`: scale 7 is -0.5",
        ),
        (
            "dup.safetensors",
            Box::new(|m, _| *m = m.replacen("\"version\":1", "\"version\":1,\"version\":1", 1)),
            "duplicate key `version`",
        ),
    ];
    for (name, tamper, expected) in cases {
        let path = tampered_export(d, name, tamper);
        let before = count(d);
        let o = moq(&["inspect", path.to_str().unwrap()]);
        assert_bad(&o, expected, d, before);
    }

    // Found by the fuzzer: a NaN in a plain tensor, a zero point no quantizer writes.
    use moq_core::export::{Exported, MoqFile};
    use moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, pack, quantize};
    let w: Vec<f32> = (0..32).map(|i| i as f32 * 0.1).collect();
    let q = quantize("w", &w, &QuantSpec::new(4, QuantType::Asymmetric, 4)).unwrap();
    let packed = pack(&q, 8, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    let mut far = packed.clone();
    far.zero_points[2] = (1 << 30) + 100;
    for (name, file, expected) in [
        (
            "nan-bias.safetensors",
            MoqFile {
                quantized: vec![Exported {
                    name: "w".into(),
                    shape: vec![4, 8],
                    packed,
                }],
                float: vec![("b".into(), vec![2], vec![0.5, f32::NAN])],
            },
            "tensor `b`: element 1 is NaN",
        ),
        (
            "zero-point.safetensors",
            MoqFile {
                quantized: vec![Exported {
                    name: "w".into(),
                    shape: vec![4, 8],
                    packed: far,
                }],
                float: vec![],
            },
            "`w`: zero point 2 is 1073741932",
        ),
    ] {
        let path = d.join(name);
        file.save(&path).unwrap();
        let before = count(d);
        assert_bad(
            &moq(&["inspect", path.to_str().unwrap()]),
            expected,
            d,
            before,
        );
    }
}

/// Class 6: SIGTERM or SIGINT while `quantize` writes leaves no partial file: the exit status
/// is 128 + the signal and the folder holds what it held before.
#[test]
fn a_signal_during_quantize_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = matrix_file(d, "big.safetensors", 4096, 2048);
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("out.safetensors");
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let child = spawn(&[
            "quantize",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--bits",
            "4",
            "--type",
            "asymmetric",
            "--groups",
            "4096",
            "--rounding",
            "stochastic",
        ]);
        // Wait for the temporary output to appear, then signal.
        let start = Instant::now();
        while count(&out_dir) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no temporary output appeared"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let o = finishes_within(child, Duration::from_secs(30), "signalled quantize");
        assert_eq!(
            o.status.code(),
            Some(128 + signal),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let left: Vec<_> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// Duplicate keys in a config and duplicate tensor names in a safetensors header are refused,
/// naming the key; a header error names its tensor, with control characters escaped.
#[test]
fn duplicates_and_unnamed_faults_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out.safetensors");
    let config = write(
        d,
        "dup.json",
        r#"{"quantize_training": {"quantize_bits": {"start_bits": 99, "start_bits": 12}}}"#,
    );
    let before = count(d);
    let o = schedule(&config, &["--steps", "10"]);
    assert_bad(
        &o,
        "duplicate key `quantize_training.quantize_bits.start_bits`",
        d,
        before,
    );
    let dup = raw_safetensors(
        d,
        "dup.safetensors",
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0; 8],
    );
    let before = count(d);
    assert_bad(
        &quantize(&dup, &out, &["--bits", "8"]),
        "duplicate key `a`",
        d,
        before,
    );
    let odd = raw_safetensors(
        d,
        "odd.safetensors",
        "{\"w\\r\\u001b[2K\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,4]}}",
        &[0; 4],
    );
    let before = count(d);
    let o = quantize(&odd, &out, &["--bits", "8"]);
    assert_bad(
        &o,
        "tensor `w\\r\\u{1b}[2K`: shape [3] of F32 needs 12 bytes",
        d,
        before,
    );
    assert!(!stderr(&o).trim_end().contains(['\r', '\u{1b}']));
}

/// Missing flags keep their names, a bare `moq` asks for a subcommand, and `--output` equal
/// to `--input` (by path or by hard link) is refused with the input untouched.
#[test]
fn usage_errors_name_what_is_missing_and_the_input_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write(d, "ds.json", HAND_CONFIG);
    let before = count(d);
    let o = moq(&["schedule", "--steps", "10"]);
    assert_bad(&o, "--config <CONFIG>", d, before);
    let o = moq(&["quantize", "--bits", "8"]);
    assert_bad(&o, "--input <INPUT> --output <OUTPUT>", d, before);
    let o = moq(&[]);
    assert_bad(
        &o,
        "a subcommand is required: schedule, quantize, inspect or allocate",
        d,
        before,
    );
    let _ = config;

    let input = matrix_file(d, "in.safetensors", 4, 4);
    let original = std::fs::read(&input).unwrap();
    let link = d.join("link.safetensors");
    std::fs::hard_link(&input, &link).unwrap();
    let before = count(d);
    for output in [&input, &link] {
        let o = quantize(&input, output, &["--bits", "4"]);
        assert_bad(&o, "is the input file", d, before);
        assert_eq!(std::fs::read(&input).unwrap(), original);
    }
}

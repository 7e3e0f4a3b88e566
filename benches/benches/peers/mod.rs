//! The Python peers of the CPU matmul benchmark, each timed warm and from DRAM in its own
//! process (from DRAM on a stack of distinct copies of its weight of the same total size as
//! ours, `memory::stack_bytes`, called in turn): numpy's f32 `x @ W` (OpenBLAS) and
//! onnxruntime's weight-only `MatMulNBits` (`benches/ort_matmul_nbits.py`). A peer that is not
//! installed is skipped with the reason, which the caller prints.
//!
//! `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` are removed from the peers' environment (they pin
//! OpenBLAS to a slower kernel on some machines); numpy reports the OpenBLAS kernel it ran.

use std::process::Command;
use std::time::Duration;

use crate::memory::stack_bytes;

/// A peer's median times for one shape.
#[derive(Clone, Copy, Debug)]
pub struct PeerTime {
    pub warm: Duration,
    pub dram: Duration,
    /// Relative error against `x · dequant(W)` (onnxruntime; numpy is the reference).
    pub error: Option<f64>,
}

/// numpy's times for each `(k, n, m)`, with a line saying which BLAS kernel ran; `Err` says
/// why numpy is skipped.
pub fn numpy(
    shapes: &[(usize, usize, usize)],
    rounds: usize,
    threads: usize,
) -> Result<(String, Vec<PeerTime>), String> {
    let stack = stack_bytes();
    let script = format!(
        "import ctypes, glob, os, time\n\
         import numpy as np\n\
         blas = np.__config__.CONFIG['Build Dependencies']['blas']\n\
         core = '?'\n\
         for lib in glob.glob(os.path.dirname(np.__file__) + '.libs/*openblas*'):\n\
         \x20   so = ctypes.CDLL(lib)\n\
         \x20   for name in ('scipy_openblas_get_corename64_', 'scipy_openblas_get_corename', 'openblas_get_corename'):\n\
         \x20       if hasattr(so, name):\n\
         \x20           f = getattr(so, name); f.restype = ctypes.c_char_p; core = f().decode()\n\
         \x20           break\n\
         print(f\"numpy {{np.__version__}}, {{blas['name']}} {{blas.get('version', '')}}, kernel {{core}}\")\n\
         def median(ws, x):\n\
         \x20   for w in ws: x @ w\n\
         \x20   t = []\n\
         \x20   for i in range({rounds}):\n\
         \x20       s = time.perf_counter(); x @ ws[i % len(ws)]; t.append(time.perf_counter() - s)\n\
         \x20   return sorted(t)[len(t) // 2]\n\
         for k, n, m in {shapes:?}:\n\
         \x20   x = np.random.rand(m, k).astype(np.float32)\n\
         \x20   ws = [np.random.rand(k, n).astype(np.float32) for _ in range(max(2, -(-{stack} // (4 * k * n))))]\n\
         \x20   print(median(ws[:1], x), median(ws, x))\n\
         \x20   del ws\n"
    );
    let stdout = python(&["-c", &script], threads).map_err(|e| format!("numpy: {e}"))?;
    let mut lines = stdout.lines();
    let kernel = lines.next().unwrap_or_default().to_string();
    let times = lines
        .map(|l| parse_pair(l).ok_or_else(|| format!("numpy printed `{l}`")))
        .collect::<Result<Vec<_>, _>>()?;
    if times.len() != shapes.len() {
        return Err(format!(
            "numpy timed {} of {} shapes",
            times.len(),
            shapes.len()
        ));
    }
    Ok((kernel, times))
}

/// onnxruntime `MatMulNBits` times for each `(k, n, m)` at `bits` (4 or 8), blocks of `block`
/// along K and `accuracy_level` `level` (1: f32 activations, 4: int8 activations); `Err` says
/// why it is skipped.
pub fn onnxruntime(
    shapes: &[(usize, usize, usize)],
    bits: u32,
    block: usize,
    level: u32,
    rounds: usize,
    threads: usize,
) -> Result<(String, Vec<PeerTime>), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/ort_matmul_nbits.py");
    let mut args: Vec<String> = [
        script.to_string(),
        format!("--bits={bits}"),
        format!("--block={block}"),
        format!("--level={level}"),
        format!("--rounds={rounds}"),
        format!("--threads={threads}"),
        format!("--stack-bytes={}", stack_bytes()),
    ]
    .into();
    args.extend(
        shapes
            .iter()
            .map(|(k, n, m)| format!("--shape={k},{n},{m}")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = python(&args, threads).map_err(|e| format!("onnxruntime: {e}"))?;
    let mut version = String::new();
    let mut times = Vec::new();
    for line in stdout.lines() {
        let (time, v) = parse_ort(line).ok_or_else(|| format!("onnxruntime printed `{line}`"))?;
        version = v;
        times.push(time);
    }
    if times.len() != shapes.len() {
        return Err(format!(
            "onnxruntime timed {} of {} shapes",
            times.len(),
            shapes.len()
        ));
    }
    Ok((version, times))
}

/// Runs `python3 ARGS` on `threads` threads without the OpenBLAS overrides; its stdout, or
/// why not (its stderr's last line when it failed).
fn python(args: &[&str], threads: usize) -> Result<String, String> {
    let out = Command::new("python3")
        .args(args)
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .env("OPENBLAS_NUM_THREADS", threads.to_string())
        .output()
        .map_err(|e| format!("python3 did not start: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("no message").trim();
        return Err(format!("{last} (exit {})", out.status));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("output not UTF-8: {e}"))
}

/// `"WARM DRAM"` in seconds.
fn parse_pair(line: &str) -> Option<PeerTime> {
    let (warm, dram) = line.trim().split_once(' ')?;
    Some(PeerTime {
        warm: Duration::from_secs_f64(warm.parse().ok()?),
        dram: Duration::from_secs_f64(dram.parse().ok()?),
        error: None,
    })
}

/// One JSON line of `ort_matmul_nbits.py`: its times and error, and onnxruntime's version.
fn parse_ort(line: &str) -> Option<(PeerTime, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let secs = |key: &str| Some(Duration::from_secs_f64(v.get(key)?.as_f64()?));
    let time = PeerTime {
        warm: secs("warm_s")?,
        dram: secs("dram_s")?,
        error: v.get("rel_error").and_then(|e| e.as_f64()),
    };
    Some((time, v.get("onnxruntime")?.as_str()?.to_string()))
}

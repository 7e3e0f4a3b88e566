//! The ratio benchmark of low-bit inference: our W8 and W4 matmuls (`QuantizedLinear` on
//! burn's cubecl backend, `moq-kernels`) against burn's f16 matmul and burn's own quantized
//! matmul (Q8S/Q4S of the same codes), on the same device in the same process, over
//! M ∈ {1, 4, 16, 64, 256} × (K, N) ∈ {(4096, 4096), (4096, 14336), (8192, 8192)}, group 128.
//! It prints a markdown table: each time (median over rounds), the ratios to f16, the weight
//! bandwidth each achieved, and how far the outputs are from each other (a benchmark of wrong
//! answers is worthless). Then fake quantization against a device copy of the same tensor.
//!
//! ```text
//! cargo bench -p moq-benches --features cuda --bench matmul_ratio            # burn-cuda
//! cargo bench -p moq-benches --features wgpu --bench matmul_ratio            # burn-wgpu
//! cargo bench -p moq-benches --features wgpu --bench matmul_ratio -- --smoke # small shapes
//! ```
//! With both features, `--wgpu` picks burn-wgpu. `--smoke` runs small shapes once: on lavapipe
//! (CI) it checks that everything runs and agrees; its timings mean nothing. `--quick` times
//! only 4096×4096 (3 rounds). `--csv FILE` also writes every time in microseconds, one row per
//! shape (`backend,k,n,m,f16,w8,w4,q8s,q4s`), for `scripts/gpu-bundle`'s cuBLAS peer. The
//! first line names the device (`--describe` prints it alone) and what the runtime reports of it (streaming multiprocessors,
//! plane size, shared memory).

// Without a GPU backend the benchmark only explains how to build it.
#![cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code, unused))]

mod common;
mod stats;

use std::time::Duration;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use common::{GROUP, Weights, input, timed, weights};
use moq_burn::moq_core::{QuantSpec, QuantType};
use moq_burn::{MoqBackend, fake_quantize};
use stats::{median, relative_error, values};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = Options {
        smoke: args.iter().any(|a| a == "--smoke"),
        quick: args.iter().any(|a| a == "--quick"),
        csv: args
            .iter()
            .position(|a| a == "--csv")
            .map(|i| match args.get(i + 1) {
                Some(path) => std::path::PathBuf::from(path),
                None => {
                    eprintln!("matmul_ratio: --csv needs a file name");
                    std::process::exit(2);
                }
            }),
    };
    let _wgpu = args.iter().any(|a| a == "--wgpu");
    // `--describe`: the device line alone.
    let _describe = args.iter().any(|a| a == "--describe");
    #[cfg(feature = "cuda")]
    if !_wgpu {
        use moq_kernels::cubecl::cuda::CudaRuntime;
        type B = burn_cubecl::CubeBackend<CudaRuntime, half::f16, i32, u8>;
        describe::<CudaRuntime>();
        if _describe {
            return;
        }
        return run::<B>(Default::default(), &options, "burn-cuda");
    }
    #[cfg(feature = "wgpu")]
    {
        use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
        type B = CubeBackend<WgpuRuntime, half::f16, i32, u32>;
        describe::<WgpuRuntime>();
        if _describe {
            return;
        }
        #[allow(clippy::needless_return)]
        return run::<B>(Default::default(), &options, "burn-wgpu");
    }
    #[allow(unreachable_code)]
    {
        eprintln!("matmul_ratio: build with --features cuda or --features wgpu");
        std::process::exit(2);
    }
}

/// What the command line asks for.
struct Options {
    /// Small shapes, timed once: a check that everything runs and agrees.
    smoke: bool,
    /// One shape (4096×4096), 3 rounds.
    quick: bool,
    /// Where the times also go as CSV.
    csv: Option<std::path::PathBuf>,
}

/// The device as the runtime reports it: the figures the kernels' launch sizes depend on.
fn describe<R: moq_kernels::cubecl::Runtime>() {
    let client = R::client(&Default::default());
    let hw = &client.properties().hardware;
    let sms = hw
        .num_streaming_multiprocessors
        .map_or("unknown".to_string(), |n| n.to_string());
    println!(
        "device: runtime {}, streaming multiprocessors {sms}, plane size {}–{}, shared memory \
         {} KiB per cube, at most {} units per cube",
        R::name(&client),
        hw.plane_size_min,
        hw.plane_size_max,
        hw.max_shared_memory_size / 1024,
        hw.max_units_per_cube,
    );
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn gbps(bytes: usize, d: Duration) -> String {
    format!("{:.1}", bytes as f64 / d.as_secs_f64() / 1e9)
}

/// Median time per call of each contender, interleaved over `rounds`.
fn time_all<B: Backend>(
    device: &B::Device,
    rounds: usize,
    smoke: bool,
    contenders: &[&dyn Fn() -> Tensor<B, 2>],
) -> Vec<Duration> {
    // Calls per measurement: about 50 ms of work each (2 in a smoke run).
    let iters: Vec<u64> = contenders
        .iter()
        .map(|f| {
            let once = timed::<B, _>(device, 1, f).as_secs_f64().max(1e-7);
            if smoke {
                2
            } else {
                (0.05 / once).clamp(3.0, 10_000.0) as u64
            }
        })
        .collect();
    let mut times = vec![Vec::new(); contenders.len()];
    for _ in 0..rounds {
        for (i, f) in contenders.iter().enumerate() {
            times[i].push(timed::<B, _>(device, iters[i], f) / iters[i] as u32);
        }
    }
    times.into_iter().map(median).collect()
}

/// The grid `options` ask for: the weight shapes (K, N), the batch sizes M, and the rounds.
fn grid(options: &Options) -> (&'static [(usize, usize)], &'static [usize], usize) {
    let smoke = options.smoke;
    let shapes: &[(usize, usize)] = if smoke {
        &[(256, 512)]
    } else if options.quick {
        &[(4096, 4096)]
    } else {
        &[(4096, 4096), (4096, 14336), (8192, 8192)]
    };
    let ms: &[usize] = if smoke {
        &[1, 4, 16, 64]
    } else {
        &[1, 4, 16, 64, 256]
    };
    let rounds = match (smoke, options.quick) {
        (true, _) => 1,
        (false, true) => 3,
        (false, false) => 7,
    };
    (shapes, ms, rounds)
}

fn run<B: MoqBackend>(device: B::Device, options: &Options, backend: &str) {
    let smoke = options.smoke;
    let (shapes, ms, rounds) = grid(options);
    let mut csv = String::from("backend,k,n,m,f16,w8,w4,q8s,q4s\n");
    println!(
        "low-bit matmul on {backend} ({device:?}), group {GROUP}, f16 activations, weights and \
         scales, f32 accumulation; median of {rounds} rounds"
    );
    println!();
    println!(
        "| K×N | M | f16 | W8 | W4 | burn Q8S | burn Q4S | f16/W8 | f16/W4 | f16/Q8S | f16/Q4S \
         | GB/s f16 | GB/s W8 | GB/s W4 | err W8 | err W4 |"
    );
    println!("|{}", " --- |".repeat(16));
    for &(k, n) in shapes {
        let w = weights::<B>(k, n, &device);
        for &m in ms {
            let us = row::<B>(&device, &w, (k, n, m), rounds, smoke);
            csv.push_str(&format!("{backend},{k},{n},{m},{}\n", us.join(",")));
        }
    }
    if let Some(path) = &options.csv
        && let Err(e) = std::fs::write(path, &csv)
    {
        eprintln!("matmul_ratio: cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
    fake_quantization::<B>(&device, smoke);
}

/// The row of batch size `m` against the `k × n` weights `w`: every contender checked against
/// its reference and timed over `rounds`, printed; exits 1 when the outputs disagree. Returns
/// the times in microseconds, for the CSV.
fn row<B: MoqBackend>(
    device: &B::Device,
    w: &Weights<B>,
    (k, n, m): (usize, usize, usize),
    rounds: usize,
    smoke: bool,
) -> Vec<String> {
    let x = input::<B>(m, k, device);
    let dense = || x.clone().matmul(w.dense.clone());
    let w8 = || w.w8.forward(x.clone());
    let w4 = || w.w4.forward(x.clone());
    let q8 = || x.clone().matmul(w.q8.clone());
    let q4 = || x.clone().matmul(w.q4.clone());
    // W8 and burn's Q8S hold the codes of the dense weight; W4 those of burn's Q4S.
    let reference = values(dense());
    let err_w8 = relative_error(&values(w8()), &reference);
    let err_q8 = relative_error(&values(q8()), &reference);
    let ref4 = values(q4());
    let err_w4 = relative_error(&values(w4()), &ref4);
    let t = time_all::<B>(device, rounds, smoke, &[&dense, &w8, &w4, &q8, &q4]);
    let ratio = |i: usize| format!("{:.2}", t[0].as_secs_f64() / t[i].as_secs_f64());
    let us: Vec<String> = t
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64() * 1e6))
        .collect();
    println!(
        "| {k}×{n} | {m} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | \
         {err_w8:.1e} | {err_w4:.1e} (vs Q4S) |",
        micros(t[0]),
        micros(t[1]),
        micros(t[2]),
        micros(t[3]),
        micros(t[4]),
        ratio(1),
        ratio(2),
        ratio(3),
        ratio(4),
        gbps(w.bytes[0], t[0]),
        gbps(w.bytes[1], t[1]),
        gbps(w.bytes[2], t[2]),
    );
    let limit = 2e-2;
    if err_w8 > limit || err_w4 > limit || err_q8 > limit {
        eprintln!(
            "outputs disagree at {k}×{n}, M = {m}: W8 {err_w8}, W4 {err_w4} (vs Q4S), \
             burn Q8S {err_q8}"
        );
        std::process::exit(1);
    }
    us
}

/// Fused fake quantization against a device copy (`x · 1`, which reads and writes the tensor
/// once) of the same tensor.
fn fake_quantization<B: MoqBackend>(device: &B::Device, smoke: bool) {
    let len = if smoke { 1 << 20 } else { 1 << 26 };
    let groups = 64;
    let x = input::<B>(len / 4096, 4096, device);
    let spec = QuantSpec::new(8, QuantType::Symmetric, groups);
    let copy = || x.clone().mul_scalar(1.0);
    let quantize = || fake_quantize(x.clone(), "x", &spec, 0.0).expect("finite input");
    let rounds = if smoke { 1 } else { 7 };
    let t = time_all::<B>(device, rounds, smoke, &[&copy, &quantize]);
    let bytes = 2 * len * size_of::<half::f16>();
    println!();
    println!(
        "fake quantization of {len} f16 values (8-bit symmetric, {groups} groups): copy {} \
         ({} GB/s), fused fake quantization {} ({} GB/s), fake_quantize/copy bandwidth {:.2} \
         (target ≥ 0.5)",
        micros(t[0]),
        gbps(bytes, t[0]),
        micros(t[1]),
        gbps(bytes, t[1]),
        t[0].as_secs_f64() / t[1].as_secs_f64()
    );
}

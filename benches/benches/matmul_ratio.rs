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
//! (CI) it checks that everything runs and agrees; its timings mean nothing.

// Without a GPU backend the benchmark only explains how to build it.
#![cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code, unused))]

mod common;
mod stats;

use std::time::Duration;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use common::{GROUP, input, timed, weights};
use moq_burn::moq_core::{QuantSpec, QuantType};
use moq_burn::{MoqBackend, fake_quantize};
use stats::{median, relative_error, values};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let _wgpu = args.iter().any(|a| a == "--wgpu");
    #[cfg(feature = "cuda")]
    if !_wgpu {
        use moq_kernels::cubecl::cuda::CudaRuntime;
        type B = burn_cubecl::CubeBackend<CudaRuntime, half::f16, i32, u8>;
        return run::<B>(Default::default(), smoke, "burn-cuda");
    }
    #[cfg(feature = "wgpu")]
    {
        use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
        type B = CubeBackend<WgpuRuntime, half::f16, i32, u32>;
        #[allow(clippy::needless_return)]
        return run::<B>(Default::default(), smoke, "burn-wgpu");
    }
    #[allow(unreachable_code)]
    {
        eprintln!("matmul_ratio: build with --features cuda or --features wgpu");
        std::process::exit(2);
    }
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

fn run<B: MoqBackend>(device: B::Device, smoke: bool, backend: &str) {
    let shapes: &[(usize, usize)] = if smoke {
        &[(256, 512)]
    } else {
        &[(4096, 4096), (4096, 14336), (8192, 8192)]
    };
    let ms: &[usize] = if smoke {
        &[1, 4, 16, 64]
    } else {
        &[1, 4, 16, 64, 256]
    };
    let rounds = if smoke { 1 } else { 7 };
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
            let x = input::<B>(m, k, &device);
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
            let t = time_all::<B>(&device, rounds, smoke, &[&dense, &w8, &w4, &q8, &q4]);
            let ratio = |i: usize| format!("{:.2}", t[0].as_secs_f64() / t[i].as_secs_f64());
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
        }
    }
    fake_quantization::<B>(&device, smoke);
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

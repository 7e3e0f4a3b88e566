//! Ratio benchmark: symmetric 8-bit nearest fake quantization of a 64 Mi-element f32 buffer
//! against a plain copy of the same buffer, measured in the same run (absolute times on shared
//! machines are noise; the ratio is the figure). Target: `quantize/copy ≤ 3` on one core.
//!
//! `cargo bench -p moq-benches --bench quantize_ratio` (set `MOQ_BENCH_ELEMENTS` for another size).

use std::hint::black_box;
use std::time::{Duration, Instant};

use moq_core::{QuantSpec, QuantType, fake_quantize};

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn measure(
    threads: usize,
    src: &[f32],
    dst: &mut [f32],
    spec: &QuantSpec,
    rounds: usize,
) -> (Duration, Duration) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    pool.install(|| {
        let (mut copy, mut quant) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            dst.copy_from_slice(black_box(src));
            black_box(&mut *dst);
            copy.push(t.elapsed());
            let t = Instant::now();
            fake_quantize("bench", black_box(src), dst, spec).expect("finite input");
            black_box(&mut *dst);
            quant.push(t.elapsed());
        }
        (median(copy), median(quant))
    })
}

fn main() {
    let n: usize = std::env::var("MOQ_BENCH_ELEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20);
    // Deterministic, weight-like values.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let src: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    let mut dst = vec![0.0f32; n];
    let bytes = (n * 4) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut configs = vec![1];
    if cores > 1 {
        configs.push(cores);
    }
    for group_len in [n, 512, 128] {
        if !n.is_multiple_of(group_len) {
            println!("(groups of {group_len} skipped: they do not divide {n} elements)");
            continue;
        }
        let spec = QuantSpec::new(8, QuantType::Symmetric, n / group_len);
        let groups = match group_len == n {
            true => "1 group".to_string(),
            false => format!("groups of {group_len}"),
        };
        println!(
            "fake quantization, symmetric 8-bit nearest, {groups}, {n} f32 elements ({:.0} MiB)",
            bytes / (1 << 20) as f64
        );
        for &threads in &configs {
            let (copy, quant) = measure(threads, &src, &mut dst, &spec, 7);
            println!(
                "{threads} thread(s): copy {:.1} ms ({:.1} GB/s)  quantize {:.1} ms ({:.1} GB/s)  \
                 quantize/copy = {:.2}",
                copy.as_secs_f64() * 1e3,
                2.0 * bytes / copy.as_secs_f64() / 1e9,
                quant.as_secs_f64() * 1e3,
                2.0 * bytes / quant.as_secs_f64() / 1e9,
                quant.as_secs_f64() / copy.as_secs_f64()
            );
        }
    }
}

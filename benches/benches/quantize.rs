//! Criterion view of fake quantization: a 64 Mi-element f32 buffer, symmetric 8-bit nearest,
//! on one thread and on all of them, beside a copy of the same buffer.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use moq_core::{QuantSpec, QuantType, fake_quantize};

fn bench(c: &mut Criterion) {
    let n = 64usize << 20;
    let src: Vec<f32> = (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 2001) as f32 - 1000.0) * 1e-4)
        .collect();
    let mut dst = vec![0.0f32; n];
    let spec = QuantSpec::new(8, QuantType::Symmetric, 1);
    let mut group = c.benchmark_group("fake_quantize_64Mi_f32");
    group
        .sample_size(10)
        .throughput(Throughput::Bytes((n * 4) as u64));
    group.bench_function("copy", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    group.bench_function("sym8_one_thread", |b| {
        one.install(|| b.iter(|| fake_quantize("bench", black_box(&src), &mut dst, &spec).unwrap()))
    });
    group.bench_function("sym8_all_threads", |b| {
        b.iter(|| fake_quantize("bench", black_box(&src), &mut dst, &spec).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

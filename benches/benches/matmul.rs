//! Criterion's micro view of the low-bit matmul at one decode-sized shape (M = 1,
//! K = N = 4096, group 128): burn's f16 matmul, our W8 and W4, burn's Q8S and Q4S. Timed with
//! `iter_custom` and a device sync around the calls, since GPU work is asynchronous. The side
//! by side table over all shapes is the `matmul_ratio` bench.
//!
//! `cargo bench -p moq-benches --features cuda --bench matmul` (or `--features wgpu`).

#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod common;

use criterion::{Criterion, criterion_group, criterion_main};

#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn matmul(c: &mut Criterion) {
    // Every backend the build has, each in its own group (`--features cuda,wgpu` times both).
    #[cfg(feature = "cuda")]
    on::<burn_cubecl::CubeBackend<moq_kernels::cubecl::cuda::CudaRuntime, half::f16, i32, u8>>(
        c, "cuda",
    );
    #[cfg(feature = "wgpu")]
    on::<burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, half::f16, i32, u32>>(
        c, "wgpu",
    );
}

/// The five forms on backend `B`, in one criterion group named after the backend.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn on<B: moq_burn::MoqBackend>(c: &mut Criterion, backend: &str) {
    use common::{input, timed, weights};
    use criterion::Throughput;
    let device = Default::default();
    let (k, n) = (4096, 4096);
    let w = weights::<B>(k, n, &device);
    let x = input::<B>(1, k, &device);
    let mut group = c.benchmark_group(format!("matmul {backend} 1x{k}x{n}"));
    group.sample_size(20);
    // Throughput: the bytes of weights each form reads (burn's Q8S/Q4S hold the same codes).
    group.throughput(Throughput::Bytes(w.bytes[0] as u64));
    group.bench_function("f16", |b| {
        b.iter_custom(|iters| timed::<B, _>(&device, iters, || x.clone().matmul(w.dense.clone())))
    });
    group.throughput(Throughput::Bytes(w.bytes[1] as u64));
    group.bench_function("W8", |b| {
        b.iter_custom(|iters| timed::<B, _>(&device, iters, || w.w8.forward(x.clone())))
    });
    group.throughput(Throughput::Bytes(w.bytes[2] as u64));
    group.bench_function("W4", |b| {
        b.iter_custom(|iters| timed::<B, _>(&device, iters, || w.w4.forward(x.clone())))
    });
    group.throughput(Throughput::Bytes(w.bytes[1] as u64));
    group.bench_function("burn Q8S", |b| {
        b.iter_custom(|iters| timed::<B, _>(&device, iters, || x.clone().matmul(w.q8.clone())))
    });
    group.throughput(Throughput::Bytes(w.bytes[2] as u64));
    group.bench_function("burn Q4S", |b| {
        b.iter_custom(|iters| timed::<B, _>(&device, iters, || x.clone().matmul(w.q4.clone())))
    });
    group.finish();
}

#[cfg(not(any(feature = "cuda", feature = "wgpu")))]
fn matmul(_c: &mut Criterion) {
    eprintln!("matmul: build with --features cuda or --features wgpu");
}

criterion_group!(benches, matmul);
criterion_main!(benches);

//! What the matmul benchmarks share: the weights of one `(K, N)` shape in every contender's
//! form, built from one set of codes, and a timer that waits for the device.

use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moq_burn::moq_core::export::Exported;
use moq_burn::moq_core::{
    CodeLayout, PackedTensor, QuantSpec, QuantType, ScaleFormat, dequantize, pack, quantize, unpack,
};
use moq_burn::{MoqBackend, QuantizedLinear, to_burn_data};

/// Elements per group, as the inference targets assume (docs/algorithm.md, "Inference").
pub const GROUP: usize = 128;

/// One weight `W [k, n]` (random, seeded) in each contender's form.
pub struct Weights<B: Backend> {
    /// Dequantized 8-bit weight in the backend's float type: burn's own matmul baseline.
    pub dense: Tensor<B, 2>,
    /// 8-bit codes, group 128, f16 scales: our W8.
    pub w8: QuantizedLinear<B>,
    /// 4-bit codes, group 128, f16 scales: our W4.
    pub w4: QuantizedLinear<B>,
    /// burn's Q8S (block [1, 128]) of the same 8-bit codes.
    pub q8: Tensor<B, 2>,
    /// burn's Q4S (block [1, 128]) of the same 4-bit codes.
    pub q4: Tensor<B, 2>,
    /// Bytes each form reads: dense, W8, W4 (codes plus scales).
    pub bytes: [usize; 3],
}

fn packed(w: &[f32], n: usize, bits: u32) -> PackedTensor {
    let spec = QuantSpec::new(bits, QuantType::Symmetric, w.len() / GROUP);
    let q = quantize("w", w, &spec).expect("valid spec");
    pack(&q, n, CodeLayout::Packed32, ScaleFormat::F16).expect("valid codes")
}

/// Builds every form of a random `[k, n]` weight (`n` a multiple of 128).
pub fn weights<B: MoqBackend>(k: usize, n: usize, device: &B::Device) -> Weights<B> {
    let mut s = (k * 7919 + n) as u64 | 1;
    let w: Vec<f32> = (0..k * n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    let (p8, p4) = (packed(&w, n, 8), packed(&w, n, 4));
    let mut dq = vec![0.0f32; k * n];
    dequantize(&unpack(&p8).expect("valid"), &mut dq).expect("valid");
    let layer = |p: &PackedTensor| {
        let e = Exported {
            name: "w".into(),
            shape: vec![k, n],
            packed: p.clone(),
        };
        QuantizedLinear::from_export(&e, None, device).expect("valid export")
    };
    let burn_q = |p: &PackedTensor| {
        Tensor::from_data(to_burn_data(p, &[k, n]).expect("Q8S/Q4S layout"), device)
    };
    Weights {
        dense: Tensor::from_data(TensorData::new(dq, [k, n]), device),
        w8: layer(&p8),
        w4: layer(&p4),
        q8: burn_q(&p8),
        q4: burn_q(&p4),
        bytes: [k * n * 2, p8.size_bytes(), p4.size_bytes()],
    }
}

/// A seeded `[m, k]` input.
pub fn input<B: Backend>(m: usize, k: usize, device: &B::Device) -> Tensor<B, 2> {
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 31) % 97) as f32 / 97.0 - 0.5)
        .collect();
    Tensor::from_data(TensorData::new(x, [m, k]), device)
}

/// Waits until the device has finished its queued work.
pub fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("device sync");
}

/// Time of `iters` calls of `f`, from a synchronised start to a synchronised end.
pub fn timed<B: Backend, O>(device: &B::Device, iters: u64, mut f: impl FnMut() -> O) -> Duration {
    sync::<B>(device);
    let start = Instant::now();
    for _ in 0..iters {
        drop(f());
    }
    sync::<B>(device);
    start.elapsed()
}

//! The low-bit-weight matmul against moq-core's reference (dequantize on the host, multiply in
//! f64), on cubecl's wgpu runtime: random weights, odd shapes (rows not a multiple of the codes
//! per word, groups that straddle rows), every width 1–8 and both grids. Needs a wgpu adapter
//! (lavapipe in CI): `cargo test -p moq-kernels --features wgpu -- --include-ignored`.
#![cfg(feature = "wgpu")]

use cubecl::Runtime;
use cubecl::prelude::*;
use cubecl::wgpu::WgpuRuntime;
use moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, dequantize, pack, quantize};
use moq_kernels::{DeviceWeights, KernelError, matmul};

/// xorshift64*, uniform in (−1, 1).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn check(m: usize, k: usize, n: usize, bits: u32, quant_type: QuantType, groups: usize) {
    let client = WgpuRuntime::client(&Default::default());
    let w = random(k * n, (k * 31 + n * 7 + bits as usize) as u64);
    let x = random(m * k, (m * 13 + k) as u64);
    let q = quantize("w", &w, &QuantSpec::new(bits, quant_type, groups)).unwrap();
    let mut dq = vec![0.0f32; k * n];
    dequantize(&q, &mut dq).unwrap();
    let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    let weights = DeviceWeights::upload(&client, &packed).unwrap();
    let y = matmul(
        &client,
        client.create_from_slice(f32::as_bytes(&x)),
        m,
        &weights,
    )
    .unwrap();
    let y = client.read_one(y).unwrap();
    let y = f32::from_bytes(&y);
    assert_eq!(y.len(), m * n);
    for r in 0..m {
        for c in 0..n {
            let expected: f64 = (0..k)
                .map(|i| x[r * k + i] as f64 * dq[i * n + c] as f64)
                .sum();
            let scale: f64 = (0..k)
                .map(|i| (x[r * k + i] as f64 * dq[i * n + c] as f64).abs())
                .sum();
            let got = y[r * n + c] as f64;
            assert!(
                (got - expected).abs() <= 1e-5 * scale.max(1e-3),
                "{m}x{k}x{n}, {bits} bits {quant_type:?}, {groups} groups: y[{r}, {c}] = {got}, \
                 reference {expected}"
            );
        }
    }
}

#[test]
#[ignore = "needs a wgpu adapter"]
fn matmul_matches_the_reference_for_every_width() {
    for bits in [8, 4] {
        for quant_type in [QuantType::Symmetric, QuantType::Asymmetric] {
            for (m, k, n, groups) in [
                (1, 64, 128, 64),
                (3, 37, 45, 5),
                (16, 33, 8, 3),
                (5, 20, 17, 17),
            ] {
                check(m, k, n, bits, quant_type, groups);
            }
        }
    }
    for bits in [7, 6, 5, 3] {
        check(2, 37, 45, bits, QuantType::Asymmetric, 9);
        check(2, 37, 45, bits, QuantType::Symmetric, 1);
    }
    // Ternary and binary grids are symmetric.
    for bits in [2, 1] {
        check(4, 37, 45, bits, QuantType::Symmetric, 5);
    }
}

#[test]
#[ignore = "needs a wgpu adapter"]
fn weights_the_kernel_cannot_read_are_named() {
    let client = WgpuRuntime::client(&Default::default());
    let w = random(64, 1);
    let q = quantize("w", &w, &QuantSpec::new(8, QuantType::Symmetric, 2)).unwrap();
    let int8 = pack(&q, 16, CodeLayout::Int8, ScaleFormat::F32).unwrap();
    let Err(KernelError::Layout { reason }) = DeviceWeights::upload(&client, &int8) else {
        panic!("int8 codes must be refused");
    };
    assert!(reason.contains("Packed32"), "{reason}");
    let f16 = pack(&q, 16, CodeLayout::Packed32, ScaleFormat::F16).unwrap();
    assert!(DeviceWeights::upload(&client, &f16).is_err());
    // Parts that do not agree would make the kernel read out of bounds.
    let mut short = pack(&q, 16, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    short.groups = 4;
    let Err(KernelError::Layout { reason }) = DeviceWeights::upload(&client, &short) else {
        panic!("2 scales for 4 groups must be refused");
    };
    assert!(reason.contains("2 scales for 4 groups"), "{reason}");
}

/// The compiler in use is the one the features ask for: SPIR-V with `vulkan` (which unlocks f16
/// and i8 on Vulkan devices), WGSL otherwise.
#[test]
#[ignore = "needs a wgpu adapter"]
fn the_configured_compiler_runs_the_kernels() {
    let client = WgpuRuntime::client(&Default::default());
    let name = WgpuRuntime::name(&client);
    if cfg!(feature = "vulkan") {
        assert_eq!(name, "wgpu<spirv>");
    } else {
        assert!(name.starts_with("wgpu<"), "{name}");
    }
}

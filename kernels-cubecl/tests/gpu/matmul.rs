//! The low-bit-weight matmul against a host reference (moq-core's dequantization, products in
//! f64): both kernels (GEMV with and without split-K and vectorised loads, tiled), f32 and f16
//! activations, f32 and f16 scales, every width 1–8 and both grids.

use half::f16;
use moq_core::{
    CodeLayout, PackedScales, QuantSpec, QuantType, ScaleFormat, dequantize, pack, quantize, unpack,
};
use moq_kernels::{DeviceWeights, Kernel, KernelError, choose_kernel, matmul};

use crate::TestRuntime;
use crate::common::{client, random, read, upload};

/// The most k-slices any GEMV case was split into (the tests must cover split-K).
static SPLIT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    bits: u32,
    quant_type: QuantType,
    groups: usize,
}

fn case(m: usize, k: usize, n: usize, bits: u32, quant_type: QuantType, groups: usize) -> Case {
    Case {
        m,
        k,
        n,
        bits,
        quant_type,
        groups,
    }
}

/// Runs one case with f32 or f16 activations and scales and compares with the reference.
fn check(c: Case, half_x: bool, scales: ScaleFormat) {
    let client = client();
    let Case { m, k, n, bits, .. } = c;
    if let Kernel::Gemv { splits, .. } = choose_kernel(m, k, n, bits) {
        SPLIT.fetch_max(splits, std::sync::atomic::Ordering::Relaxed);
    }
    let w = random(k * n, (k * 31 + n * 7 + bits as usize) as u64);
    let mut x = random(m * k, (m * 13 + k) as u64);
    if half_x {
        x = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
    }
    let q = quantize("w", &w, &QuantSpec::new(bits, c.quant_type, c.groups)).unwrap();
    let packed = pack(&q, n, CodeLayout::Packed32, scales).unwrap();
    // The reference dequantizes what the kernel reads (f16 scales included).
    let mut dq = vec![0.0f32; k * n];
    dequantize(&unpack(&packed).unwrap(), &mut dq).unwrap();
    let weights = DeviceWeights::upload(&client, &packed).unwrap();
    let y: Vec<f32> = if half_x {
        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let y = matmul::<TestRuntime, f16>(&client, &upload(&client, &xh), m, &weights).unwrap();
        read::<f16>(&client, y, m * n)
            .iter()
            .map(|v| v.to_f32())
            .collect()
    } else {
        let y = matmul::<TestRuntime, f32>(&client, &upload(&client, &x), m, &weights).unwrap();
        read::<f32>(&client, y, m * n)
    };
    // f32 accumulation in another order; f16 output rounds once more.
    let relative = if half_x { 2e-3 } else { 1e-5 };
    for r in 0..m {
        for col in 0..n {
            let products = (0..k).map(|i| x[r * k + i] as f64 * dq[i * n + col] as f64);
            let expected: f64 = products.clone().sum();
            let size: f64 = products.map(f64::abs).sum();
            let got = y[r * n + col] as f64;
            assert!(
                (got - expected).abs() <= relative * size.max(1e-3),
                "{c:?}, f16 x {half_x}, {scales:?} scales ({:?}): y[{r}, {col}] = {got}, \
                 reference {expected}",
                choose_kernel(m, k, n, bits)
            );
        }
    }
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn both_kernels_match_the_reference_for_every_width() {
    use QuantType::{Asymmetric, Symmetric};
    for bits in [8, 4] {
        for quant_type in [Symmetric, Asymmetric] {
            for c in [
                // GEMV: vectorised loads (4 and 2 words), split-K, rows 1..16.
                case(1, 300, 256, bits, quant_type, 300),
                case(1, 2000, 64, bits, quant_type, 125),
                case(3, 2000, 40, bits, quant_type, 16),
                case(2, 129, 64, bits, quant_type, 129),
                case(3, 37, 45, bits, quant_type, 5),
                case(16, 33, 8, bits, quant_type, 3),
                case(5, 20, 17, bits, quant_type, 17),
                // Tiled: partial tiles in every dimension.
                case(17, 37, 45, bits, quant_type, 9),
                case(70, 100, 130, bits, quant_type, 10),
                // Tiled with whole words per group (one scale per word).
                case(24, 64, 128, bits, quant_type, 32),
            ] {
                check(c, false, ScaleFormat::F32);
            }
        }
    }
    for bits in [7, 6, 5, 3] {
        check(
            case(2, 37, 45, bits, Asymmetric, 9),
            false,
            ScaleFormat::F32,
        );
        check(
            case(20, 37, 45, bits, Symmetric, 1),
            false,
            ScaleFormat::F32,
        );
        // Tiled, with words that straddle the 64-column tiles' edges.
        check(
            case(20, 37, 150, bits, Asymmetric, 5),
            false,
            ScaleFormat::F32,
        );
    }
    // Ternary and binary grids are symmetric.
    for bits in [2, 1] {
        check(case(4, 37, 64, bits, Symmetric, 8), false, ScaleFormat::F32);
        check(
            case(33, 37, 45, bits, Symmetric, 5),
            false,
            ScaleFormat::F32,
        );
    }
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn half_activations_and_half_scales() {
    for (m, bits) in [(1, 4), (4, 8), (40, 4)] {
        let c = case(m, 96, 128, bits, QuantType::Symmetric, 96);
        check(c, true, ScaleFormat::F16);
        check(c, false, ScaleFormat::F16);
        check(c, true, ScaleFormat::F32);
    }
}

#[test]
fn the_kernel_choice_follows_the_shape() {
    // Small m: GEMV with vectorised loads and split-K when the columns are few.
    let Kernel::Gemv {
        rows,
        vec,
        splits,
        k_per_split,
    } = choose_kernel(1, 4096, 4096, 4)
    else {
        panic!("m = 1 is a GEMV");
    };
    assert_eq!((rows, vec), (1, 4));
    assert!(splits > 1 && splits * k_per_split >= 4096);
    // Partials (splits · m · n f32, written and read) stay within a tenth of the weight bytes.
    assert!(
        8 * splits as usize * 4096 <= 4096 * 4096 / 2 / 10,
        "{splits} splits"
    );
    let Kernel::Gemv {
        rows, vec, splits, ..
    } = choose_kernel(16, 4096, 4096, 8)
    else {
        panic!("m = 16 is a GEMV");
    };
    assert_eq!((rows, vec), (16, 1));
    assert!(
        8 * 16 * splits as usize * 4096 <= 4096 * 4096 / 10,
        "{splits} splits"
    );
    // A row of 45 4-bit codes is 6 words: vectors of 2.
    let Kernel::Gemv { vec, .. } = choose_kernel(1, 64, 45, 4) else {
        panic!()
    };
    assert_eq!(vec, 2);
    assert_eq!(choose_kernel(17, 4096, 4096, 4), Kernel::Tiled);
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn int8_codes_upload_and_download_in_either_layout() {
    let client = client();
    let w = random(64, 1);
    let q = quantize("w", &w, &QuantSpec::new(8, QuantType::Asymmetric, 2)).unwrap();
    let int8 = pack(&q, 16, CodeLayout::Int8, ScaleFormat::F16).unwrap();
    let weights = DeviceWeights::upload(&client, &int8).unwrap();
    assert_eq!(weights.download(&client, CodeLayout::Int8).unwrap(), int8);
    let words = weights.download(&client, CodeLayout::Packed32).unwrap();
    assert_eq!(unpack(&words).unwrap(), unpack(&int8).unwrap());
    assert!(matches!(words.scales, PackedScales::F16(_)));
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn weights_the_kernel_cannot_read_are_named() {
    let client = client();
    let w = random(64, 1);
    let q = quantize("w", &w, &QuantSpec::new(8, QuantType::Symmetric, 2)).unwrap();
    // Parts that do not agree would make the kernel read out of bounds.
    let mut short = pack(&q, 16, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    short.groups = 4;
    let Err(KernelError::Layout { reason }) = DeviceWeights::upload(&client, &short) else {
        panic!("2 scales for 4 groups must be refused");
    };
    assert!(reason.contains("2 scales for 4 groups"), "{reason}");
    // An input too short for m rows.
    let packed = pack(&q, 16, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    let weights = DeviceWeights::upload(&client, &packed).unwrap();
    let x = upload(&client, &[0.0f32; 8]);
    let Err(KernelError::Shape { expected, .. }) =
        matmul::<TestRuntime, f32>(&client, &x, 3, &weights)
    else {
        panic!("8 values cannot be 3 rows of 4");
    };
    assert_eq!(expected, 12);
    // Beyond the kernels' 32-bit indexing (here m · k): refused, not wrapped.
    let m = u32::MAX as usize / weights.shape().rows + 1;
    let err = matmul::<TestRuntime, f32>(&client, &x, m, &weights).unwrap_err();
    assert!(
        matches!(&err, KernelError::Spec(moq_core::MoqError::TooLarge { .. })),
        "{err}"
    );
}

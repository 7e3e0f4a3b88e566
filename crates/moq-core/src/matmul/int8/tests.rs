use super::*;
use crate::config::QuantType;
use crate::matmul::{PackedMatrix, matmul_with};
use crate::pack::{CodeLayout, ScaleFormat, pack};
use crate::quantizer::{QuantSpec, quantize};
use crate::rng::Rng;

fn isas() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|i| i.available())
        .collect()
}

/// ‖int8 path − f32 path‖ / ‖f32 path‖ over all outputs, and whether the ISAs agree.
fn error(isa: Isa, m: usize, k: usize, n: usize, spec: QuantSpec, scales: ScaleFormat) -> f64 {
    let mut rng = Rng::new((m * 7919 + k * 31 + n) as u64 + spec.bits as u64);
    let w = rng.normal_vec(k * n, 0.05);
    let x = rng.normal_vec(m * k, 1.0);
    let q = quantize("w", &w, &spec).unwrap();
    let p = pack(&q, n, CodeLayout::Packed32, scales).unwrap();
    let matrix = PackedMatrix::from_packed(&p).unwrap();
    let tiled = TiledWeight::new(&matrix).unwrap();
    let (mut exact, mut fast) = (vec![0.0f32; m * n], vec![f32::NAN; m * n]);
    matmul_with(Isa::Portable, &x, &matrix, &mut exact).unwrap();
    matmul_i8_with(isa, &x, &tiled, &mut fast).unwrap();
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&e, &f) in exact.iter().zip(&fast) {
        diff += (e as f64 - f as f64).powi(2);
        norm += (e as f64).powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Every width and grid, one and several rows (five: one pass of four and one alone), shapes with a partial tile and a partial
/// block, groups of whole rows: the int8 path is within 2% of the exact one (its error is the
/// activations' rounding, about 0.5%), on every instruction set this CPU has.
#[test]
fn every_width_and_grid_is_close_to_the_exact_path() {
    for isa in isas() {
        for bits in 1..=8u32 {
            for quant_type in [QuantType::Symmetric, QuantType::Asymmetric] {
                if bits <= 2 && quant_type == QuantType::Asymmetric {
                    continue;
                }
                // (k, n, groups): groups along rows; a partial tile (n = 20) in whole-row
                // groups; k not a multiple of a block.
                for (k, n, groups) in [(256, 64, 256 * 2), (70, 20, 35), (100, 128, 100 * 16)] {
                    for m in [1, 3, 5] {
                        let spec = QuantSpec::new(bits, quant_type, groups);
                        let e = error(isa, m, k, n, spec, ScaleFormat::F32);
                        assert!(
                            e < 0.02,
                            "{isa:?} {bits} bits {quant_type:?} m {m} k {k} n {n}: {e}"
                        );
                    }
                }
            }
        }
        let f16 = error(
            isa,
            2,
            96,
            48,
            QuantSpec::new(4, QuantType::Asymmetric, 96 * 3),
            ScaleFormat::F16,
        );
        assert!(f16 < 0.02, "{isa:?} f16 scales: {f16}");
    }
}

/// The SIMD and portable kernels compute the same integer sums: their outputs agree to f32
/// rounding (a fused multiply-add apart).
#[test]
fn the_instruction_sets_agree() {
    let mut rng = Rng::new(5);
    let (k, n) = (300, 96);
    let w = rng.normal_vec(k * n, 0.05);
    let x = rng.normal_vec(5 * k, 1.0);
    for bits in [2, 4, 5, 8] {
        let q = quantize(
            "w",
            &w,
            &QuantSpec::new(bits, QuantType::Symmetric, k * n / 32),
        )
        .unwrap();
        let p = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
        let tiled = TiledWeight::new(&PackedMatrix::from_packed(&p).unwrap()).unwrap();
        let mut want = vec![0.0f32; 5 * n];
        matmul_i8_with(Isa::Portable, &x, &tiled, &mut want).unwrap();
        for isa in isas() {
            let mut got = vec![0.0f32; 5 * n];
            matmul_i8_with(isa, &x, &tiled, &mut got).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{isa:?} {bits} bits: {g} vs {w}"
                );
            }
        }
    }
}

/// Enough tiles for several threads, and the largest codes (8-bit −128, 4-bit −8) against the
/// largest activations, where a 16-bit pair sum would overflow if the kernel's bounds were off.
#[test]
fn extreme_codes_and_large_shapes_do_not_overflow() {
    for bits in [4u32, 8] {
        let (k, n) = (1024, 1024);
        // Every group's largest magnitude is negative, so it is coded −2^(b−1)... in all rows.
        let w: Vec<f32> = (0..k * n)
            .map(|i| if i % 2 == 0 { -1.0 } else { 0.99 })
            .collect();
        let spec = QuantSpec::new(bits, QuantType::Symmetric, k * n / 128);
        let q = quantize("w", &w, &spec).unwrap();
        let p = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
        let matrix = PackedMatrix::from_packed(&p).unwrap();
        let tiled = TiledWeight::new(&matrix).unwrap();
        let x: Vec<f32> = (0..k)
            .map(|i| if i % 3 == 0 { -5.0 } else { 5.0 })
            .collect();
        let (mut exact, mut fast) = (vec![0.0f32; n], vec![0.0f32; n]);
        matmul_with(Isa::Portable, &x, &matrix, &mut exact).unwrap();
        for isa in isas() {
            matmul_i8_with(isa, &x, &tiled, &mut fast).unwrap();
            for (c, (e, f)) in exact.iter().zip(&fast).enumerate() {
                assert!(
                    (e - f).abs() <= 0.01 * e.abs().max(1.0),
                    "{isa:?} {bits} bits col {c}: {f} vs {e}"
                );
            }
        }
    }
}

#[test]
fn groups_that_split_a_tile_are_refused_by_name_and_bad_lengths_write_nothing() {
    let w = vec![0.5f32; 6 * 10];
    let q = quantize("w", &w, &QuantSpec::new(4, QuantType::Symmetric, 12)).unwrap();
    let p = pack(&q, 10, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    let err = TiledWeight::new(&PackedMatrix::from_packed(&p).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("groups of 5 in rows of 10"), "{err}");
    let q = quantize("w", &w, &QuantSpec::new(4, QuantType::Symmetric, 6)).unwrap();
    let p = pack(&q, 10, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    let tiled = TiledWeight::new(&PackedMatrix::from_packed(&p).unwrap()).unwrap();
    let mut y = vec![7.0f32; 10];
    assert!(
        matmul_i8(&[1.0; 5], &tiled, &mut y)
            .unwrap_err()
            .to_string()
            .contains("found 5")
    );
    assert_eq!(y, [7.0; 10]);
    let mut x = vec![1.0f32; 6];
    x[2] = f32::NAN;
    matmul_i8(&x, &tiled, &mut y).unwrap();
    assert!(
        y.iter().all(|v| v.is_nan()),
        "a NaN input gives NaN outputs: {y:?}"
    );
}

//! Property tests of the quantizer and the packed formats (docs/contributing.md, "Toolchain facts").

use std::collections::BTreeSet;

use half::{bf16, f16};
use moq_core::{
    CodeLayout, Element, NoiseKey, QuantSpec, QuantType, Rounding, ScaleFormat, dequantize,
    fake_quantize, fake_quantize_in_place, pack, quantize, unpack,
};
use proptest::prelude::*;

/// A tensor (values of mixed magnitude, some exact zeros and repeats) and a valid spec for it.
fn tensor_and_spec() -> impl Strategy<Value = (Vec<f32>, QuantSpec)> {
    (
        1usize..6,
        1usize..40,
        1u32..=16,
        any::<bool>(),
        any::<bool>(),
        -3i32..3,
        any::<u64>(),
    )
        .prop_flat_map(
            |(groups, group_len, bits, asym, stochastic, exponent, seed)| {
                let scale = 10f32.powi(exponent);
                let value = prop_oneof![
                    6 => (-1.0f32..1.0).prop_map(move |v| v * scale),
                    1 => Just(0.0f32),
                    1 => Just(0.5f32 * scale),
                ];
                let quant_type = if asym && bits > 2 {
                    QuantType::Asymmetric
                } else {
                    QuantType::Symmetric
                };
                let mut spec = QuantSpec::new(bits, quant_type, groups);
                if stochastic && bits > 2 {
                    spec = spec.stochastic(NoiseKey {
                        seed,
                        step: 3,
                        stream: 1,
                    });
                }
                (
                    proptest::collection::vec(value, groups * group_len),
                    Just(spec),
                )
            },
        )
}

fn nearest(spec: QuantSpec) -> QuantSpec {
    QuantSpec {
        rounding: Rounding::Nearest,
        ..spec
    }
}

fn fake<T: Element>(x: &[T], spec: &QuantSpec) -> Vec<T> {
    let mut out = x.to_vec();
    fake_quantize("t", x, &mut out, spec).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, max_global_rejects: 100_000, ..ProptestConfig::default() })]

    /// `Q(Q(x)) = Q(x)` exactly for symmetric grids; for asymmetric grids the codes and zero
    /// points are the same and the scale moves by at most an ulp or two (see the quantizer docs).
    #[test]
    fn idempotent((x, spec) in tensor_and_spec()) {
        let spec = nearest(spec);
        let once = fake(&x, &spec);
        let twice = fake(&once, &spec);
        if spec.quant_type == QuantType::Symmetric {
            prop_assert_eq!(once, twice);
        } else {
            let a = quantize("t", &x, &spec).unwrap();
            let b = quantize("t", &once, &spec).unwrap();
            prop_assert_eq!(&a.codes, &b.codes);
            prop_assert_eq!(&a.zero_points, &b.zero_points);
            for (sa, sb) in a.scales.iter().zip(&b.scales) {
                prop_assert!((sa.to_bits() as i64 - sb.to_bits() as i64).abs() <= 2, "{} vs {}", sa, sb);
            }
        }
    }

    /// Groups that straddle zero (the usual case for weights) are idempotent exactly.
    #[test]
    fn idempotent_exactly_when_straddling_zero((mut x, spec) in tensor_and_spec()) {
        let spec = nearest(spec);
        let group_len = x.len() / spec.groups;
        for group in x.chunks_mut(group_len) {
            let m = group.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
            group[0] = -m;
            if group.len() > 1 {
                group[1] = m * 0.75;
            }
        }
        let once = fake(&x, &spec);
        prop_assert_eq!(&once, &fake(&once, &spec));
    }

    #[test]
    fn nearest_error_is_at_most_half_a_step((x, spec) in tensor_and_spec()) {
        prop_assume!(spec.bits >= 3);
        let spec = nearest(spec);
        let q = quantize("t", &x, &spec).unwrap();
        let y = fake(&x, &spec);
        let group_len = x.len() / spec.groups;
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            let s = q.scales[i / group_len];
            let slack = 4.0 * f32::EPSILON * a.abs().max(s);
            prop_assert!((a - b).abs() <= s / 2.0 + slack, "x {} → {} (s {})", a, b, s);
        }
    }

    #[test]
    fn at_most_two_to_the_bits_values_per_group((x, spec) in tensor_and_spec()) {
        let y = fake(&x, &spec);
        let group_len = x.len() / spec.groups;
        for group in y.chunks(group_len) {
            let distinct: BTreeSet<u32> = group.iter().map(|v| (v + 0.0).to_bits()).collect();
            prop_assert!(distinct.len() as u64 <= 1u64 << spec.bits, "{} values", distinct.len());
        }
    }

    #[test]
    fn symmetric_zero_maps_to_zero((mut x, spec) in tensor_and_spec(), at in any::<prop::sample::Index>()) {
        prop_assume!(spec.quant_type == QuantType::Symmetric && spec.bits >= 2);
        let i = at.index(x.len());
        x[i] = 0.0;
        prop_assert_eq!(fake(&x, &spec)[i], 0.0);
    }

    #[test]
    fn dequantized_codes_equal_fake_quantization((x, spec) in tensor_and_spec()) {
        let q = quantize("t", &x, &spec).unwrap();
        let mut back = vec![0.0f32; x.len()];
        dequantize(&q, &mut back).unwrap();
        prop_assert_eq!(&back, &fake(&x, &spec));
        let mut in_place = x.clone();
        fake_quantize_in_place("t", &mut in_place, &spec).unwrap();
        prop_assert_eq!(&back, &in_place);

        let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let q = quantize("t", &xh, &spec).unwrap();
        let mut back = vec![f16::ZERO; x.len()];
        dequantize(&q, &mut back).unwrap();
        prop_assert_eq!(back, fake(&xh, &spec));

        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let q = quantize("t", &xb, &spec).unwrap();
        let mut back = vec![bf16::ZERO; x.len()];
        dequantize(&q, &mut back).unwrap();
        prop_assert_eq!(back, fake(&xb, &spec));
    }

    #[test]
    fn pack_round_trip((x, spec) in tensor_and_spec(), int8 in any::<bool>(), rows in 1usize..4) {
        prop_assume!(spec.bits <= 8);
        let q = quantize("t", &x, &spec).unwrap();
        let row_len = if x.len() % rows == 0 { x.len() / rows } else { x.len() };
        let layout = if int8 { CodeLayout::Int8 } else { CodeLayout::Packed32 };
        let packed = pack(&q, row_len, layout, ScaleFormat::F32).unwrap();
        prop_assert_eq!(unpack(&packed).unwrap(), q);
    }

    #[test]
    fn codes_fit_their_width((x, spec) in tensor_and_spec()) {
        let q = quantize("t", &x, &spec).unwrap();
        let (lo, hi) = match (spec.quant_type, spec.bits) {
            (QuantType::Asymmetric, b) => (0, (1i64 << b) - 1),
            (QuantType::Symmetric, 1 | 2) => (-1, 1),
            (QuantType::Symmetric, b) => (-((1i64 << (b - 1)) - 1), (1i64 << (b - 1)) - 1),
        };
        prop_assert!(q.codes.iter().all(|&c| (lo..=hi).contains(&(c as i64))));
    }
}

/// Stochastic rounding is unbiased: averaged over many steps, Q(x) approaches x, while
/// nearest rounding keeps its fixed error.
#[test]
fn stochastic_rounding_is_unbiased_on_average() {
    // 3 bits, max|x| = 3 → s = 1: every other value sits between grid points.
    let x = [3.0f32, 0.3, -1.25, 2.6, 0.5, -0.1];
    let spec = QuantSpec::new(3, QuantType::Symmetric, 1);
    let steps = 20_000;
    let mut mean = [0.0f64; 6];
    for step in 0..steps {
        let y = fake(
            &x,
            &spec.stochastic(NoiseKey {
                seed: 42,
                step,
                stream: 0,
            }),
        );
        for (m, v) in mean.iter_mut().zip(y) {
            *m += v as f64 / steps as f64;
        }
    }
    for (m, v) in mean.iter().zip(x) {
        // Standard error ≤ 0.5/sqrt(20000) ≈ 0.0035.
        assert!((m - v as f64).abs() < 0.015, "{mean:?}");
    }
    let near = fake(&x, &spec);
    assert_eq!(near, [3.0, 0.0, -1.0, 3.0, 0.0, 0.0]);
}

/// The same seed, step and stream give the same result; another step gives another.
#[test]
fn stochastic_rounding_is_reproducible() {
    let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    let spec = QuantSpec::new(4, QuantType::Asymmetric, 4);
    let a = fake(
        &x,
        &spec.stochastic(NoiseKey {
            seed: 1,
            step: 10,
            stream: 2,
        }),
    );
    let b = fake(
        &x,
        &spec.stochastic(NoiseKey {
            seed: 1,
            step: 10,
            stream: 2,
        }),
    );
    let c = fake(
        &x,
        &spec.stochastic(NoiseKey {
            seed: 1,
            step: 11,
            stream: 2,
        }),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
}

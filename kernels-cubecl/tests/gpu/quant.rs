//! Fake quantization, codes and dequantization on the device against `moq-core`.

use half::f16;
use moq_core::{
    CodeLayout, NoiseKey, QuantSpec, QuantType, ScaleFormat, dequantize, fake_quantize_mixed,
    quantize, unpack,
};
use moq_kernels::{KernelError, fake_quantize};

use crate::TestRuntime;
use crate::common::{client, random, read, upload};

/// Differences from the reference that the module docs allow: a few ulps where a scale differs
/// in its last bits (any number of elements), and an element on a rounding tie one grid step
/// away (at most one in 500). Returns how many elements differ at all.
fn compare(what: &str, got: &[f32], expected: &[f32], groups: usize, step: &[f32]) -> usize {
    assert_eq!(got.len(), expected.len(), "{what}");
    let group_len = got.len() / groups;
    let (mut ulps, mut steps) = (0, 0);
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let s = step[i / group_len];
        if g == e {
            continue;
        } else if (g - e).abs() <= 1e-6 * e.abs().max(s) {
            ulps += 1;
        } else {
            steps += 1;
            assert!(
                (g - e).abs() <= 1.001 * s + 1e-6 * e.abs(),
                "{what}: element {i} is {g}, reference {e} (grid step {s})"
            );
        }
    }
    assert!(
        steps <= got.len() / 500 + 1,
        "{what}: {steps} of {} elements are a grid step from the reference",
        got.len()
    );
    ulps + steps
}

fn reference(x: &[f32], spec: &QuantSpec, mix: f32) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0.0; x.len()];
    fake_quantize_mixed("x", x, &mut out, spec, mix).unwrap();
    let q = quantize("x", x, spec).unwrap();
    (out, q.scales)
}

fn check_f32(len: usize, spec: QuantSpec, mix: f32) -> usize {
    let client = client();
    let x: Vec<f32> = random(len, len as u64 + spec.bits as u64)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + (i / 97) as f32))
        .collect();
    let y = fake_quantize::<TestRuntime, f32>(&client, &upload(&client, &x), len, "x", &spec, mix)
        .unwrap();
    let got = read::<f32>(&client, y, len);
    let (expected, scales) = reference(&x, &spec, mix);
    compare(
        &format!("{len} × {spec:?}, ρ {mix}"),
        &got,
        &expected,
        spec.groups,
        &scales,
    )
}

/// Every mode within the bounds of [`compare`]; symmetric grids of 3 bits and more (nearest,
/// stochastic and mixed) bit for bit, as the crate's docs say (their scale is one division,
/// which the shader compilers keep as the CPU does it).
#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn fake_quantization_matches_the_reference_in_every_mode() {
    let mut differ = 0;
    let mut total = 0;
    for bits in [3, 4, 5, 8, 12, 16] {
        for quant_type in [QuantType::Symmetric, QuantType::Asymmetric] {
            // Odd lengths and groups; one group longer than a statistics cube's span.
            for (len, groups) in [(1001, 7), (4 * 1155, 4), (9000, 1)] {
                let spec = QuantSpec::new(bits, quant_type, groups);
                let key = NoiseKey {
                    seed: 7,
                    step: 3,
                    stream: bits as u64,
                };
                let here = check_f32(len, spec, 0.0)
                    + check_f32(len, spec.stochastic(key), 0.0)
                    + check_f32(len, spec, 0.25);
                if quant_type == QuantType::Symmetric {
                    assert_eq!(
                        here, 0,
                        "{bits}-bit symmetric, {len} elements in {groups} groups: {here} \
                         elements differ from the reference"
                    );
                }
                differ += here;
                total += 3 * len;
            }
        }
    }
    // One group of more than 256 × 4096 values: two merge passes.
    for quant_type in [QuantType::Symmetric, QuantType::Asymmetric] {
        let len = (1 << 20) + 4099;
        let here = check_f32(len, QuantSpec::new(8, quant_type, 1), 0.0);
        if quant_type == QuantType::Symmetric {
            assert_eq!(here, 0, "8-bit symmetric, one group of {len}");
        }
        differ += here;
        total += len;
    }
    for bits in [1, 2] {
        for (len, groups) in [(1001, 7), (9000, 1)] {
            differ += check_f32(len, QuantSpec::new(bits, QuantType::Symmetric, groups), 0.0);
            total += len;
        }
    }
    println!(
        "{differ} of {total} elements (all asymmetric, ternary or binary) differ from the reference in the last bits"
    );
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn half_tensors_quantize_in_f32_and_round_once() {
    let client = client();
    let len = 3 * 700;
    let x: Vec<f16> = random(len, 5).into_iter().map(f16::from_f32).collect();
    let spec = QuantSpec::new(4, QuantType::Asymmetric, 3);
    let y = fake_quantize::<TestRuntime, f16>(&client, &upload(&client, &x), len, "h", &spec, 0.0)
        .unwrap();
    let got: Vec<f32> = read::<f16>(&client, y, len)
        .iter()
        .map(|v| v.to_f32())
        .collect();
    let mut expected = vec![f16::ZERO; len];
    fake_quantize_mixed("h", &x, &mut expected, &spec, 0.0).unwrap();
    let expected: Vec<f32> = expected.iter().map(|v| v.to_f32()).collect();
    let scales = quantize("h", &x, &spec).unwrap().scales;
    compare("f16", &got, &expected, 3, &scales);
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn codes_and_dequantization_match_the_reference() {
    let client = client();
    for (bits, quant_type, groups, rows, row_len) in [
        (8, QuantType::Symmetric, 12, 12, 100),
        (8, QuantType::Asymmetric, 5, 5, 33),
        (4, QuantType::Symmetric, 30, 10, 45),
        (4, QuantType::Asymmetric, 2, 10, 45),
        (3, QuantType::Asymmetric, 1, 7, 13),
        (2, QuantType::Symmetric, 4, 4, 50),
        (1, QuantType::Symmetric, 4, 4, 50),
    ] {
        let len = rows * row_len;
        let x = random(len, bits as u64 * 11 + groups as u64);
        let spec = QuantSpec::new(bits, quant_type, groups);
        let what = format!("{bits} bits {quant_type:?}, {groups} groups, rows of {row_len}");
        let weights = moq_kernels::quantize::<TestRuntime, f32>(
            &client,
            &upload(&client, &x),
            len,
            row_len,
            "w",
            &spec,
            ScaleFormat::F32,
        )
        .unwrap();
        let reference = quantize("w", &x, &spec).unwrap();
        for layout in [CodeLayout::Packed32, CodeLayout::Int8] {
            let packed = weights.download(&client, layout).unwrap();
            let got = unpack(&packed).unwrap();
            assert_eq!(got.zero_points, reference.zero_points, "{what}");
            for (g, (a, b)) in got.scales.iter().zip(&reference.scales).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs(),
                    "{what}: scale {g}: {a} vs {b}"
                );
            }
            let differ = got
                .codes
                .iter()
                .zip(&reference.codes)
                .filter(|(a, b)| a != b);
            assert!(differ.count() <= len / 500 + 1, "{what}: codes differ");
            // The device dequantizes its own codes exactly as the reference does.
            let mut expected = vec![0.0f32; len];
            dequantize(&got, &mut expected).unwrap();
            let values = read::<f32>(
                &client,
                weights.dequantize::<TestRuntime, f32>(&client),
                len,
            );
            assert_eq!(values, expected, "{what}");
        }
    }
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn bad_input_is_named_and_nothing_is_returned() {
    let client = client();
    let mut x = random(64, 3);
    x[40] = f32::NAN;
    let spec = QuantSpec::new(8, QuantType::Symmetric, 4);
    let err =
        fake_quantize::<TestRuntime, f32>(&client, &upload(&client, &x), 64, "layer.w", &spec, 0.0)
            .unwrap_err();
    assert_eq!(
        err,
        KernelError::NonFinite {
            tensor: "layer.w".into()
        }
    );
    // Far into a group of many pieces, through the merge passes.
    let mut big = random(600_000, 4);
    big[599_999] = f32::NAN;
    let spec1 = QuantSpec::new(8, QuantType::Symmetric, 1);
    let err = fake_quantize::<TestRuntime, f32>(
        &client,
        &upload(&client, &big),
        big.len(),
        "big",
        &spec1,
        0.0,
    )
    .unwrap_err();
    assert_eq!(
        err,
        KernelError::NonFinite {
            tensor: "big".into()
        }
    );
    x[40] = f32::INFINITY;
    assert!(
        fake_quantize::<TestRuntime, f32>(&client, &upload(&client, &x), 64, "w", &spec, 0.0)
            .is_err()
    );
    let err = fake_quantize::<TestRuntime, f32>(
        &client,
        &upload(&client, &random(64, 3)),
        64,
        "layer.w",
        &QuantSpec::new(8, QuantType::Symmetric, 5),
        0.0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("layer.w"), "{err}");
    let err = moq_kernels::quantize::<TestRuntime, f32>(
        &client,
        &upload(&client, &random(64, 3)),
        64,
        16,
        "w",
        &QuantSpec::new(12, QuantType::Symmetric, 4),
        ScaleFormat::F32,
    )
    .unwrap_err();
    assert!(err.to_string().contains("12 bits"), "{err}");
    // A handle shorter than the length it is given with is refused before any kernel reads it.
    let short = upload(&client, &random(64, 3));
    let spec = QuantSpec::new(8, QuantType::Symmetric, 1);
    for len in [65, 4096] {
        let err = fake_quantize::<TestRuntime, f32>(&client, &short, len, "short", &spec, 0.0)
            .unwrap_err();
        assert!(
            matches!(&err, KernelError::Shape { expected, found, .. } if *expected == len && *found < len),
            "{err}"
        );
        let err = moq_kernels::quantize::<TestRuntime, f32>(
            &client,
            &short,
            len,
            len,
            "short",
            &spec,
            ScaleFormat::F32,
        )
        .unwrap_err();
        assert!(matches!(err, KernelError::Shape { .. }), "{err}");
    }
}

//! The tensor-ops path against the reference.

use crate::common::*;

/// The tensor-ops path (what wgpu and cuda run until kernels exist) against the reference, on
/// NdArray: equal up to a few ulps of the scale, except elements on a rounding tie, which may
/// land one grid step away.
#[test]
fn tensor_ops_path_matches_the_reference() {
    use burn::tensor::TensorPrimitive;
    use moq_burn::fake_quantize_tensor_ops;
    use moq_core::NoiseKey;

    let device = Default::default();
    let mut state = 99u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let specs = [
        QuantSpec::new(8, QuantType::Symmetric, 3),
        QuantSpec::new(4, QuantType::Symmetric, 1),
        QuantSpec::new(3, QuantType::Asymmetric, 5),
        QuantSpec::new(12, QuantType::Asymmetric, 3),
        QuantSpec::new(2, QuantType::Symmetric, 3),
        QuantSpec::new(1, QuantType::Symmetric, 5),
        QuantSpec::new(6, QuantType::Asymmetric, 3).stochastic(NoiseKey {
            seed: 4,
            step: 9,
            stream: 1,
        }),
    ];
    let (mut compared, mut off_by_ulps) = (0usize, 0usize);
    for (k, spec) in specs.iter().enumerate() {
        for (rows, cols) in [(3, 5), (15, 7), (15, 1)] {
            let mut x: Vec<f32> = (0..rows * cols).map(|_| rnd() * 0.2).collect();
            x[0] = 0.0;
            if k % 2 == 0 && x.len() > 5 {
                // A group of equal values must come out unchanged.
                let g = x.len() / spec.groups;
                for v in &mut x[..g] {
                    *v = 0.0625;
                }
            }
            for mix in [0.0, 0.3] {
                let mut expected = x.clone();
                moq_core::fake_quantize_mixed("w", &x, &mut expected, spec, mix).unwrap();
                let t = Tensor::<Inner, 2>::from_data(
                    TensorData::new(x.clone(), [rows, cols]),
                    &device,
                );
                let out =
                    fake_quantize_tensor_ops::<Inner>(t.into_primitive().tensor(), "w", spec, mix)
                        .unwrap();
                let out = Tensor::<Inner, 2>::from_primitive(TensorPrimitive::Float(out));
                assert_eq!(out.dims(), [rows, cols]);
                let got = values(out);
                let q = moq_core::quantize("w", &x, spec).unwrap();
                let step = q.scales.iter().fold(0.0f32, |m, s| m.max(*s));
                for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                    let d = (a - b).abs();
                    compared += 1;
                    if d > 1e-6 {
                        off_by_ulps += 1;
                    }
                    assert!(
                        d <= step * 1.001 + 1e-6,
                        "{spec:?} mix {mix}: element {i}: {a} vs {b} (step {step})"
                    );
                }
            }
        }
    }
    assert!(
        off_by_ulps * 100 <= compared,
        "{off_by_ulps} of {compared} elements differ"
    );

    let nan = Tensor::<Inner, 2>::from_data(
        TensorData::new(vec![1.0, f32::NAN, 0.5, 2.0], [2, 2]),
        &device,
    );
    let err =
        fake_quantize_tensor_ops::<Inner>(nan.into_primitive().tensor(), "enc.w", &specs[0], 0.0);
    assert!(err.is_err());
    let err = fake_quantize_tensor_ops::<Inner>(
        Tensor::<Inner, 2>::zeros([2, 2], &device)
            .into_primitive()
            .tensor(),
        "enc.w",
        &specs[0],
        0.0,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `enc.w`: 4 elements cannot be split into 3 equal groups"
    );
}

/// NdArray's fake quantization reads a transposed view (as burn-store leaves PyTorch weights)
/// and a shared array (as the wrapper holds its masters) in row order: the same values as the
/// reference on the row-order copy, and the shared original untouched.
#[test]
fn ndarray_reads_transposed_and_shared_tensors_in_row_order() {
    use moq_burn::MoqBackend;

    let device = Default::default();
    let (rows, cols) = (6, 10);
    let x: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37) % 23) as f32 * 0.01 - 0.1)
        .collect();
    let spec = QuantSpec::new(4, QuantType::Asymmetric, 5);
    // The transpose of a [cols, rows] tensor holding x transposed: x itself, in column order.
    let mut xt = vec![0.0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            xt[c * rows + r] = x[r * cols + c];
        }
    }
    let t = Tensor::<Inner, 2>::from_data(TensorData::new(xt, [cols, rows]), &device).transpose();
    assert_eq!(values(t.clone()), x);
    let mut expected = x.clone();
    moq_core::fake_quantize_mixed("w", &x, &mut expected, &spec, 0.25).unwrap();
    let shared = t.clone();
    let out = <Inner as MoqBackend>::fake_quantize(t.into_primitive().tensor(), "w", &spec, 0.25)
        .unwrap();
    let out = Tensor::<Inner, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(out));
    assert_eq!(out.dims(), [rows, cols]);
    assert_eq!(values(out), expected);
    assert_eq!(values(shared), x);
}

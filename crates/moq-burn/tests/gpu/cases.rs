//! MoqBackend on a burn GPU backend (`crate::Gpu`, the `Fusion<CubeBackend<..>>` type users
//! hold, and `crate::Cube`, the bare `CubeBackend`), which run `moq-kernels`' fused kernel (and
//! the tensor-ops path, tested on its own): results match `moq-core`'s reference, bad input is
//! named, gradients pass straight through, the optimizer wrapper trains on it, and Hessian
//! eigenvalues (exact through nested autodiff, and by finite differences) agree with NdArray's.
//! Compiled once per backend: `tests/wgpu/main.rs` (burn-wgpu) and `tests/cuda/main.rs`
//! (burn-cuda).

use burn::backend::Autodiff;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moq_burn::moq_hessian::{Block, HessianEigenvalues, HessianLoss, HvpMethod, Weights};
use moq_burn::{Moq, fake_quantize};
use moq_core::{NoiseKey, QuantSpec, QuantType, QuantizeConfig};

use crate::{Cube, Gpu};

fn reference(x: &[f32], spec: &QuantSpec, mix: f32) -> Vec<f32> {
    let mut out = x.to_vec();
    moq_core::fake_quantize_mixed("w", x, &mut out, spec, mix).unwrap();
    out
}

/// Equal to the reference up to a few ulps of the scale (GPU division need not round like the
/// CPU's; the tensor-ops path does not nudge scales at all), with elements on a rounding tie
/// allowed one grid step away, but no more than 1% of them.
fn assert_close(got: &[f32], x: &[f32], spec: &QuantSpec, mix: f32) {
    let expected = reference(x, spec, mix);
    let step = moq_core::quantize("w", x, spec)
        .unwrap()
        .scales
        .iter()
        .fold(0.0f32, |m, s| m.max(*s));
    let mut off = 0;
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        let d = (a - b).abs();
        assert!(
            d <= step * 1.001 + 1e-5 * b.abs().max(1.0),
            "{spec:?}: element {i}: {a} vs {b}"
        );
        if d > 1e-5 * b.abs().max(1e-3) {
            off += 1;
        }
    }
    assert!(
        off * 100 <= got.len(),
        "{spec:?}: {off} of {} elements off by more than rounding",
        got.len()
    );
}

fn check_backend<B: moq_burn::MoqBackend>() {
    check_path::<B>(|t, spec, mix| fake_quantize(t, "w", spec, mix).unwrap());
}

fn check_path<B: Backend>(run: impl Fn(Tensor<B, 2>, &QuantSpec, f32) -> Tensor<B, 2>) {
    let device = Default::default();
    let x: Vec<f32> = (0..96).map(|i| (i as f32 * 0.71).sin() * 0.3).collect();
    for (spec, mix) in [
        (QuantSpec::new(4, QuantType::Symmetric, 4), 0.0),
        (
            QuantSpec::new(8, QuantType::Asymmetric, 3).stochastic(NoiseKey {
                seed: 1,
                step: 2,
                stream: 3,
            }),
            0.0,
        ),
        (QuantSpec::new(2, QuantType::Symmetric, 2), 0.25),
    ] {
        let t = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [8, 12]), &device);
        // Through a transposed view (not contiguous), and on into further lazy ops.
        let q = run(t.transpose().transpose(), &spec, mix) * 1.0;
        assert_eq!(q.dims(), [8, 12]);
        assert_close(&q.into_data().to_vec::<f32>().unwrap(), &x, &spec, mix);
    }
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn fusion_and_cube_backends_match_the_reference() {
    check_backend::<Gpu>();
    check_backend::<Cube>();
    check_path::<Gpu>(|t, spec, mix| {
        let out = moq_burn::backend::fake_quantize_tensor_ops::<Gpu>(
            t.into_primitive().tensor(),
            "w",
            spec,
            mix,
        )
        .unwrap();
        Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(out))
    });
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn errors_name_the_tensor_and_element() {
    let device = Default::default();
    let mut x: Vec<f32> = (0..24).map(|i| i as f32).collect();
    x[13] = f32::NAN;
    let t = Tensor::<Gpu, 2>::from_data(TensorData::new(x, [4, 6]), &device);
    let spec = QuantSpec::new(4, QuantType::Symmetric, 2);
    let err = fake_quantize(t.clone(), "enc.w", &spec, 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("enc.w") && err.contains("13"), "{err}");
    let err = fake_quantize(t, "enc.w", &QuantSpec::new(4, QuantType::Symmetric, 5), 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("enc.w") && err.contains('5'), "{err}");
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn straight_through_and_training() {
    type B = Autodiff<Gpu>;
    let device = Default::default();
    let w = Tensor::<B, 2>::from_data(
        TensorData::new(
            (0..16).map(|i| i as f32 / 7.0 - 1.0).collect::<Vec<_>>(),
            [4, 4],
        ),
        &device,
    )
    .require_grad();
    let q = fake_quantize(
        w.clone(),
        "w",
        &QuantSpec::new(3, QuantType::Symmetric, 1),
        0.0,
    )
    .unwrap();
    let grads = (q * 3.0).sum().backward();
    assert_eq!(
        w.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(),
        vec![3.0; 16]
    );

    <B as Backend>::seed(&device, 0);
    let mut model: Linear<B> = LinearConfig::new(16, 8).init(&device);
    let config = QuantizeConfig::builder()
        .bits(8, 4)
        .period(1)
        .schedule_offset(0)
        .groups(4)
        .build()
        .unwrap();
    let mut optim = Moq::new(config.clone())
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    for _ in 0..12 {
        let x = Tensor::<B, 2>::ones([2, 16], &device);
        let grads =
            GradientsParams::from_grads(model.forward(x).powi_scalar(2).mean().backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    assert_eq!(optim.bits(0), Some(4));
    assert!(optim.take_error().is_none());
    // The weight holds the 4-bit quantization of its master.
    let master = optim
        .to_record()
        .masters
        .remove(0)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let weight = model.weight.val().into_data().to_vec::<f32>().unwrap();
    assert_close(&weight, &master, &QuantSpec::from_config(&config, 4), 0.0);
}

/// Two tanh layers from tensor ops (exact products need ops burn can differentiate twice).
#[derive(burn::module::Module, Debug)]
struct TwoLayer<B: Backend> {
    w1: burn::module::Param<Tensor<B, 2>>,
    w2: burn::module::Param<Tensor<B, 2>>,
}

impl<B: Backend> TwoLayer<B> {
    fn new(device: &B::Device) -> Self {
        let param = |rows: usize, cols: usize, salt: f32| {
            let v: Vec<f32> = (0..rows * cols)
                .map(|i| ((i as f32 + salt) * 0.37).sin() * 0.6)
                .collect();
            burn::module::Param::from_tensor(Tensor::from_data(
                TensorData::new(v, [rows, cols]),
                device,
            ))
        };
        Self {
            w1: param(5, 7, 0.0),
            w2: param(7, 3, 1.0),
        }
    }
}

struct Regression;

impl HessianLoss for Regression {
    type Model<X: Backend> = TwoLayer<X>;

    fn model<X: Backend>(&self, device: &X::Device) -> TwoLayer<X> {
        TwoLayer::new(device)
    }

    fn loss<X: Backend>(&self, model: &TwoLayer<X>) -> Tensor<X, 1> {
        let device = model.w1.device();
        let x: Vec<f32> = (0..40).map(|i| (i as f32 * 0.53).cos()).collect();
        let x = Tensor::<X, 2>::from_data(TensorData::new(x, [8, 5]), &device);
        let y = burn::tensor::activation::tanh(x.matmul(model.w1.val())).matmul(model.w2.val());
        (y - 0.5).powi_scalar(2).mean()
    }
}

fn eigenvalues<B: Backend>(method: HvpMethod) -> Vec<f32> {
    let config = moq_core::EigenvalueConfig {
        max_iter: 300,
        tol: 1e-6,
        ..Default::default()
    };
    let model = TwoLayer::<B>::new(&Default::default());
    HessianEigenvalues::new(Regression, &config)
        .method(method)
        .compute(
            &Weights::from_module(&model),
            &[Block::new("w1", ["w1"]), Block::new("w2", ["w2"])],
        )
        .unwrap()
        .blocks
        .iter()
        .map(|b| b.eigenvalue)
        .collect()
}

#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn hessian_eigenvalues_match_ndarray() {
    let reference = eigenvalues::<burn::backend::NdArray>(HvpMethod::Exact);
    let fd = HvpMethod::FiniteDifference {
        relative_step: 1e-3,
    };
    for got in [eigenvalues::<Gpu>(HvpMethod::Exact), eigenvalues::<Gpu>(fd)] {
        for (g, r) in got.iter().zip(&reference) {
            assert!(
                ((g - r) / r).abs() < 2e-3,
                "{} {got:?} vs ndarray {reference:?}",
                crate::NAME
            );
        }
    }
}

/// A `QuantizedLinear` from random weights of every width, on NdArray (tensor ops), on the
/// `Fusion` type users hold and on the bare `CubeBackend` (both `moq-kernels`' matmul; GEMV for
/// 3 rows, tiled for 24): each equals the host reference `x · dequant(W) + b`.
#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn quantized_linear_runs_the_kernels_and_matches_every_backend() {
    use moq_burn::QuantizedLinear;
    use moq_core::export::Exported;
    use moq_core::{CodeLayout, ScaleFormat};

    fn forward<B: moq_burn::MoqBackend>(
        e: &Exported,
        bias: &[f32],
        x: &[f32],
        rows: usize,
    ) -> Vec<f32> {
        let device = Default::default();
        let layer = QuantizedLinear::<B>::from_export(e, Some(bias), &device).unwrap();
        let k = e.shape[0];
        // Rank 3: [rows / 3, 3, k].
        let x = Tensor::<B, 3>::from_data(TensorData::new(x.to_vec(), [rows / 3, 3, k]), &device);
        let y = layer.forward(x);
        assert_eq!(y.dims(), [rows / 3, 3, e.shape[1]]);
        y.into_data().to_vec::<f32>().unwrap()
    }

    let (k, n) = (40, 52);
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
    for (bits, quant_type, groups, layout, scales) in [
        (
            8,
            QuantType::Symmetric,
            40,
            CodeLayout::Int8,
            ScaleFormat::F32,
        ),
        (
            8,
            QuantType::Asymmetric,
            13,
            CodeLayout::Packed32,
            ScaleFormat::F16,
        ),
        (
            4,
            QuantType::Symmetric,
            20,
            CodeLayout::Packed32,
            ScaleFormat::F32,
        ),
        (
            4,
            QuantType::Asymmetric,
            5,
            CodeLayout::Packed32,
            ScaleFormat::F32,
        ),
        (
            3,
            QuantType::Asymmetric,
            8,
            CodeLayout::Packed32,
            ScaleFormat::F32,
        ),
        (
            2,
            QuantType::Symmetric,
            4,
            CodeLayout::Packed32,
            ScaleFormat::F32,
        ),
        (
            1,
            QuantType::Symmetric,
            4,
            CodeLayout::Packed32,
            ScaleFormat::F32,
        ),
    ] {
        let q = moq_core::quantize("w", &w, &QuantSpec::new(bits, quant_type, groups)).unwrap();
        let packed = moq_core::pack(&q, n, layout, scales).unwrap();
        let e = Exported {
            name: "fc.weight".into(),
            shape: vec![k, n],
            packed: packed.clone(),
        };
        let mut dq = vec![0.0f32; k * n];
        moq_core::dequantize(&moq_core::unpack(&packed).unwrap(), &mut dq).unwrap();
        for rows in [3, 24] {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
                .collect();
            let expected: Vec<f32> = (0..rows * n)
                .map(|o| {
                    let (r, c) = (o / n, o % n);
                    bias[c] + (0..k).map(|i| x[r * k + i] * dq[i * n + c]).sum::<f32>()
                })
                .collect();
            for (backend, got) in [
                (
                    "NdArray",
                    forward::<burn::backend::NdArray>(&e, &bias, &x, rows),
                ),
                (crate::NAME, forward::<Gpu>(&e, &bias, &x, rows)),
                ("CubeBackend", forward::<Cube>(&e, &bias, &x, rows)),
            ] {
                for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                        "{backend}, {bits} bits {quant_type:?}, {rows} rows: y[{i}] = {a}, reference {b}"
                    );
                }
            }
        }
    }
    // A mismatched input is an error naming both widths.
    let device = Default::default();
    let q = moq_core::quantize("w", &w, &QuantSpec::new(4, QuantType::Symmetric, 4)).unwrap();
    let e = Exported {
        name: "fc.weight".into(),
        shape: vec![k, n],
        packed: moq_core::pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap(),
    };
    let layer = QuantizedLinear::<Gpu>::from_export(&e, None, &device).unwrap();
    let err = layer
        .try_forward(Tensor::<Gpu, 2>::zeros([2, 39], &device))
        .unwrap_err()
        .to_string();
    assert!(err.contains("40") && err.contains("39"), "{err}");
}

/// burn's own quantized tensors from MoQ codes on the GPU backend: Q8S and Q4S, per tensor and per
/// block, dequantize to exactly the values of the codes, and burn's quantized matmul runs.
#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn burn_quantized_tensors_hold_the_codes() {
    use moq_core::{CodeLayout, ScaleFormat, pack, quantize, unpack};
    type B = Gpu;
    let device = Default::default();
    let (k, n) = (6, 64);
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    for (bits, groups, scales) in [
        (8, 1, ScaleFormat::F32),
        (8, 12, ScaleFormat::F16),
        (4, 24, ScaleFormat::F32),
        (4, 3, ScaleFormat::F32),
    ] {
        let q = quantize("w", &w, &QuantSpec::new(bits, QuantType::Symmetric, groups)).unwrap();
        let packed = pack(&q, n, CodeLayout::Packed32, scales).unwrap();
        let data = moq_burn::to_burn_data(&packed, &[k, n]).unwrap();
        let got = Tensor::<B, 2>::from_data(data, &device)
            .dequantize()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let mut expected = vec![0.0f32; k * n];
        moq_core::dequantize(&unpack(&packed).unwrap(), &mut expected).unwrap();
        assert_eq!(got, expected, "{bits} bits, {groups} groups");
        let x = Tensor::<B, 2>::ones([2, k], &device);
        let data = moq_burn::to_burn_data(&packed, &[k, n]).unwrap();
        let y = x
            .matmul(Tensor::<B, 2>::from_data(data, &device))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for c in 0..n {
            let col: f32 = (0..k).map(|r| expected[r * n + c]).sum();
            assert!(
                (y[c] - col).abs() <= 1e-4 * col.abs().max(1.0),
                "{bits} bits: {} vs {col}",
                y[c]
            );
        }
    }
}

/// Serving in the model's own type on the GPU backend: `MoqLinear` layers of 8, 3 (asymmetric)
/// and 4 bits through the kernels and a 12-bit head dequantized, and the unchanged model with
/// burn's `Q8S`/`Q4S` tensors, both equal to the fake-quantized model (`tests/shared/serve.rs`).
#[test]
#[ignore = "needs a GPU (or lavapipe)"]
fn the_users_model_serves_the_export_on_both_paths() {
    crate::serve::check_codes::<Gpu>();
    crate::serve::check_codes::<Cube>();
    crate::serve::check_burn::<Gpu>();
    crate::serve::check_burn::<Cube>();
}

//! Serving an export in the model's own type, on any backend: the checks shared by the NdArray
//! tests (`tests/training/serve.rs`) and the GPU cases (`tests/gpu/cases.rs`).
//!
//! The reference is the fake-quantized model: the same model with the file's tensors loaded
//! dequantized (`load_dequantized`), which is what MoQ trained with.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moq_burn::moq_core::export::{Exported, MoqFile};
use moq_burn::moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, pack, quantize};
use moq_burn::{Held, MoqBackend, MoqLinear, Unservable, load_burn_quantized, load_codes};

/// Three layers and a head, with burn's `Linear`.
#[derive(Module, Debug)]
pub struct Plain<B: Backend> {
    pub layers: Vec<Linear<B>>,
    pub head: Linear<B>,
}

/// The same model with one type name changed.
#[derive(Module, Debug)]
pub struct Served<B: Backend> {
    pub layers: Vec<MoqLinear<B>>,
    pub head: MoqLinear<B>,
}

/// The widths the file holds: `(tensor, bits, grid, groups)`.
pub const WIDTHS: [(&str, u32, QuantType, usize); 4] = [
    ("layers.0.weight", 8, QuantType::Symmetric, 4),
    ("layers.1.weight", 3, QuantType::Asymmetric, 8),
    ("layers.2.weight", 4, QuantType::Symmetric, 16),
    ("head.weight", 12, QuantType::Symmetric, 2),
];

const DIMS: [(usize, usize); 4] = [(16, 32), (32, 32), (32, 16), (16, 8)];

/// A `Linear` with deterministic weights and bias (no draw from the backend's generator).
pub fn linear<B: Backend>(d_in: usize, d_out: usize, salt: usize, device: &B::Device) -> Linear<B> {
    let w: Vec<f32> = (0..d_in * d_out)
        .map(|i| ((i * 7 + salt) as f32 * 0.61).sin() / (d_in as f32).sqrt())
        .collect();
    let b: Vec<f32> = (0..d_out)
        .map(|i| ((i + salt) as f32 * 1.3).cos() * 0.1)
        .collect();
    let mut l = LinearConfig::new(d_in, d_out).init(device);
    l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device));
    l.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(b, [d_out]),
        device,
    )));
    l
}

impl<B: Backend> Plain<B> {
    pub fn new(device: &B::Device) -> Self {
        let mut layers: Vec<Linear<B>> = DIMS
            .iter()
            .enumerate()
            .map(|(i, &(k, n))| linear(k, n, i + 1, device))
            .collect();
        let head = layers.pop().unwrap();
        Self { layers, head }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        stack(x, self.layers.iter().map(|l| move |x| l.forward(x)), |x| {
            self.head.forward(x)
        })
    }
}

/// The layers with `tanh` after each, then the head: both models' forward pass.
fn stack<B: Backend, L: Fn(Tensor<B, 2>) -> Tensor<B, 2>>(
    x: Tensor<B, 2>,
    layers: impl Iterator<Item = L>,
    head: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, 2> {
    head(layers.fold(x, |x, l| burn::tensor::activation::tanh(l(x))))
}

impl<B: Backend> Served<B> {
    pub fn new(device: &B::Device) -> Self {
        let plain = Plain::<B>::new(device);
        Self {
            layers: plain.layers.into_iter().map(MoqLinear::from).collect(),
            head: plain.head.into(),
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        stack(x, self.layers.iter().map(|l| move |x| l.forward(x)), |x| {
            self.head.forward(x)
        })
    }
}

/// The export of `Plain::new` with each weight at its width in `widths`.
pub fn file(widths: &[(&str, u32, QuantType, usize)]) -> MoqFile {
    file_of(
        &Plain::<burn::backend::NdArray>::new(&Default::default()),
        widths,
    )
}

/// The export of `model`: the tensors named in `widths` quantized at their widths (rounding to
/// nearest), every other parameter in f32.
pub fn file_of<M: Module<burn::backend::NdArray>>(
    model: &M,
    widths: &[(&str, u32, QuantType, usize)],
) -> MoqFile {
    let mut file = MoqFile::default();
    let params = moq_burn::path::float_params(model);
    let host = |p: &moq_burn::path::NamedParam| -> Vec<f32> {
        let mut out = Vec::new();
        model.visit(&mut Values(p.id, &mut out));
        out
    };
    for p in &params {
        let v = host(p);
        match widths.iter().find(|w| w.0 == p.path) {
            Some(&(name, bits, grid, groups)) => {
                let q = quantize(name, &v, &QuantSpec::new(bits, grid, groups)).unwrap();
                let row_len = *p.shape.last().unwrap();
                file.quantized.push(Exported {
                    name: name.into(),
                    shape: p.shape.clone(),
                    packed: pack(&q, row_len, CodeLayout::Packed32, ScaleFormat::F32).unwrap(),
                });
            }
            None => file.float.push((p.path.clone(), p.shape.clone(), v)),
        }
    }
    file
}

struct Values<'a>(burn::module::ParamId, &'a mut Vec<f32>);

impl<B: Backend> burn::module::ModuleVisitor<B> for Values<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.id == self.0 {
            *self.1 = param.val().into_data().convert::<f32>().to_vec().unwrap();
        }
    }
}

pub fn input<B: Backend>(rows: usize, device: &B::Device) -> Tensor<B, 2> {
    let x: Vec<f32> = (0..rows * 16).map(|i| (i as f32 * 0.37).cos()).collect();
    Tensor::from_data(TensorData::new(x, [rows, 16]), device)
}

pub fn host<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// Equal within f32 tolerance: the low-bit matmuls sum in another order.
pub fn assert_close(got: &[f32], expected: &[f32], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}");
    let scale = expected
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(1e-6);
    for (i, (a, b)) in got.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{what}: output {i}: {a} vs {b} (scale {scale})"
        );
    }
}

/// The fake-quantized model's outputs for `rows` rows.
pub fn reference<B: Backend>(file: &MoqFile, rows: usize, device: &B::Device) -> Vec<f32> {
    let model = moq_burn::load_dequantized(Plain::<B>::new(device), file).unwrap();
    host(model.forward(input(rows, device)))
}

/// Path 2: every `MoqLinear` weight of 1–8 bits held as codes, the 12-bit head dequantized,
/// outputs those of the fake-quantized model at a GEMV-sized and a tiled batch.
pub fn check_codes<B: MoqBackend>() {
    let device = Default::default();
    let file = file(&WIDTHS);
    let mut model = Served::<B>::new(&device);
    let report = load_codes(&mut model, &file, Unservable::Dequantize).unwrap();
    for (name, bits, _, _) in WIDTHS {
        let t = report.tensors.iter().find(|t| t.name == name).unwrap();
        assert_eq!(t.bits, Some(bits), "{name}");
        if bits <= 8 {
            assert_eq!(
                t.held,
                Held::Codes {
                    activations: moq_burn::Activations::F32
                },
                "{name}"
            );
        } else {
            assert!(
                matches!(&t.held, Held::Dequantized { reason } if reason.contains("12-bit")),
                "{name}: {:?}",
                t.held
            );
        }
    }
    assert!(model.layers.iter().all(|l| l.weight.packed().is_some()));
    assert!(model.head.weight.packed().is_none());
    assert_eq!(model.layers[1].dims(), [32, 32]);
    for rows in [1, 33] {
        let got = host(model.forward(input(rows, &device)));
        assert_close(&got, &reference::<B>(&file, rows, &device), "codes");
    }
    // Refusing what cannot be served names it.
    let err = load_codes(&mut Served::<B>::new(&device), &file, Unservable::Refuse).unwrap_err();
    assert!(err.to_string().contains("`head.weight`: 12-bit"), "{err}");
}

/// Path 1: the unchanged model with burn's quantized tensors where the backend holds them.
pub fn check_burn<B: MoqBackend>() {
    let device = Default::default();
    let file = file(&WIDTHS);
    let mut model = Plain::<B>::new(&device);
    let report = load_burn_quantized(&mut model, &file, Unservable::Dequantize).unwrap();
    let held = |name: &str| {
        report
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .held
            .clone()
    };
    assert_eq!(held("layers.0.weight"), Held::BurnQuantized);
    let four = if B::burn_quantized_bits().contains(&4) {
        Held::BurnQuantized
    } else {
        Held::Dequantized {
            reason: "4-bit codes: this backend loads burn's quantized tensors at [8] bits".into(),
        }
    };
    assert_eq!(held("layers.2.weight"), four);
    assert!(
        matches!(held("layers.1.weight"), Held::Dequantized { reason } if reason.contains("symmetric only"))
    );
    assert!(matches!(held("head.weight"), Held::Dequantized { .. }));
    assert_eq!(held("head.bias"), Held::Float);
    for rows in [1, 33] {
        let got = host(model.forward(input(rows, &device)));
        assert_close(
            &got,
            &reference::<B>(&file, rows, &device),
            "burn quantized",
        );
    }
    let err = load_burn_quantized(&mut Plain::<B>::new(&device), &file, Unservable::Refuse)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`layers.1.weight`"), "{err}");
}

//! Serving in the model's own type on NdArray ([`moq_burn::serve`]): both paths against the
//! fake-quantized model (the cases shared with the GPU tests), `MoqLinear` training and loading
//! checkpoints exactly as `Linear`, a 12-bit layer exported and served, the bytes held, and bad
//! files named.

use burn::record::{NamedMpkBytesRecorder, PrettyJsonFileRecorder};
use moq_burn::{Held, LoadReport, MoqLinear, Unservable, load_burn_quantized, load_codes};

use crate::common::*;
#[path = "../shared/serve.rs"]
pub(crate) mod cases;
use cases::{Plain, Served};

#[test]
fn moq_linear_serves_the_codes_on_ndarray() {
    cases::check_codes::<Inner>();
}

#[test]
fn burn_quantized_tensors_serve_the_unchanged_model_on_ndarray() {
    cases::check_burn::<Inner>();
}

/// `Net` with `MoqLinear` layers.
#[derive(Module, Debug)]
struct MoqNet<B: Backend> {
    layers: Vec<MoqLinear<B>>,
    head: MoqLinear<B>,
}

impl<B: Backend> MoqNet<B> {
    fn new(device: &B::Device) -> Self {
        let net = Net::<B>::new(device);
        Self {
            layers: net.layers.into_iter().map(MoqLinear::from).collect(),
            head: net.head.into(),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self
            .layers
            .iter()
            .fold(x, |x, l| burn::tensor::activation::tanh(l.forward(x)));
        self.head.forward(x)
    }
}

#[test]
fn moq_linear_trains_bit_for_bit_as_linear() {
    let device = Default::default();
    let cfg = config(8, 4, 3, 1);
    let mut net = Net::<B>::new(&device);
    let mut moq_net = MoqNet::<B>::new(&device);
    let mut optim = Moq::new(cfg.clone())
        .init(AdamConfig::new().init(), &net)
        .unwrap();
    let mut moq_optim = Moq::new(cfg)
        .init(AdamConfig::new().init(), &moq_net)
        .unwrap();
    assert_eq!(optim.quantized_params(), moq_optim.quantized_params());
    for step in 0..12 {
        let g = grads(&net, step);
        net = optim.step(1e-2, net, g);
        let loss = moq_net.forward(batch(step)).powi_scalar(2).mean();
        let g = GradientsParams::from_grads(loss.backward(), &moq_net);
        moq_net = moq_optim.step(1e-2, moq_net, g);
    }
    assert_eq!(optim.layer_bits(), moq_optim.layer_bits());
    assert_eq!(
        values(net.forward(batch(99))),
        values(moq_net.forward(batch(99)))
    );
    assert_eq!(
        optim.export(&net).unwrap(),
        moq_optim.export(&moq_net).unwrap()
    );
}

#[test]
fn a_linear_checkpoint_loads_into_moq_linear_and_back() {
    let device = Default::default();
    let net = Net::<Inner>::new(&device);
    let expected = values(net.forward(batch(3).inner()));
    let fresh = || {
        let mut m = MoqNet::<Inner>::new(&device);
        m.head = LinearConfig::new(16, 4).init(&device).into();
        m
    };
    // Binary (bincode) and named MessagePack records, as burn's recorders write them.
    let bin = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = bin.record(net.clone().into_record(), ()).unwrap();
    let m = fresh().load_record(bin.load(bytes, &device).unwrap());
    assert_eq!(values(m.forward(batch(3).inner())), expected);
    let mpk = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = mpk.record(net.clone().into_record(), ()).unwrap();
    let m = fresh().load_record(mpk.load(bytes, &device).unwrap());
    assert_eq!(values(m.forward(batch(3).inner())), expected);
    // A served model saves as the float model a `Linear` loads: its codes dequantized.
    let file = cases_file_of(&m);
    let mut served = m;
    load_codes(&mut served, &file, Unservable::Refuse).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = PrettyJsonFileRecorder::<FullPrecisionSettings>::default();
    served
        .clone()
        .save_file(dir.path().join("served"), &json)
        .unwrap();
    let back = Net::<Inner>::new(&device)
        .load_file(dir.path().join("served"), &json, &device)
        .unwrap();
    assert_close(
        &values(back.forward(batch(3).inner())),
        &values(served.forward(batch(3).inner())),
    );
}

/// `model`'s weights at 4 bits (4 groups each), biases as they are.
fn cases_file_of(model: &MoqNet<Inner>) -> moq_core::export::MoqFile {
    let at_4 = |name| (name, 4, QuantType::Symmetric, 4);
    let widths = ["layers.0.weight", "layers.1.weight", "head.weight"].map(at_4);
    cases::file_of(model, &widths)
}

fn assert_close(got: &[f32], expected: &[f32]) {
    cases::assert_close(got, expected, "outputs");
}

#[test]
fn a_12_bit_layer_is_exported_inspected_and_served() {
    // A deadline-free schedule that stops at 12 bits: export used to fail on it.
    let device = Default::default();
    let mut model = MoqNet::<B>::new(&device);
    let mut optim = Moq::new(config(16, 12, 2, 0))
        .init(SgdConfig::new().init(), &model)
        .unwrap();
    for step in 0..20 {
        let loss = model.forward(batch(step)).powi_scalar(2).mean();
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, g);
    }
    assert_eq!(optim.layer_bits(), [Some(12); 3]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.safetensors");
    optim.export(&model).unwrap().save(&path).unwrap();
    let summary = moq_core::export::MoqFile::summarize(&path).unwrap();
    assert!(
        summary
            .iter()
            .any(|s| s.name == "head.weight" && s.grid.unwrap().0 == 12)
    );
    let file = moq_core::export::MoqFile::load(&path).unwrap();
    let mut served = MoqNet::<Inner>::new(&device);
    let report = load_codes(&mut served, &file, Unservable::Dequantize).unwrap();
    assert_eq!(
        report.count(&Held::Codes {
            activations: moq_burn::Activations::F32
        }),
        0
    );
    assert_eq!(
        report.count(&Held::Dequantized {
            reason: String::new()
        }),
        3
    );
    // The fake-quantized model (its weights are the codes, exactly).
    assert_eq!(
        values(served.forward(batch(7).inner())),
        values(model.valid().forward(batch(7).inner()))
    );
    // A refused load leaves the caller's model as it was: the served model keeps its weights,
    // and still computes what it did.
    let before = values(served.forward(batch(7).inner()));
    let err = load_codes(&mut served, &file, Unservable::Refuse).unwrap_err();
    assert!(
        err.to_string().contains("`layers.0.weight`: 12-bit codes"),
        "{err}"
    );
    assert_eq!(values(served.forward(batch(7).inner())), before);
    let mut fresh = MoqNet::<Inner>::new(&device);
    let untouched = values(fresh.forward(batch(7).inner()));
    assert!(load_burn_quantized(&mut fresh, &file, Unservable::Refuse).is_err());
    assert_eq!(values(fresh.forward(batch(7).inner())), untouched);
}

#[test]
fn a_weight_outside_a_moq_linear_is_dequantized_or_refused() {
    let device = Default::default();
    let file = cases::file(&cases::WIDTHS);
    // `Plain` has burn `Linear`s: no `MoqWeight` takes the codes.
    let mut model = Plain::<Inner>::new(&device);
    let report = load_codes(&mut model, &file, Unservable::Dequantize).unwrap();
    let t = report
        .tensors
        .iter()
        .find(|t| t.name == "layers.0.weight")
        .unwrap();
    assert_eq!(
        t.held,
        Held::Dequantized {
            reason: "its module is not a MoqLinear".into()
        }
    );
    assert_close(
        &cases::host(model.forward(cases::input(5, &device))),
        &cases::reference::<Inner>(&file, 5, &device),
    );
    // Without the 12-bit head (refused for its width first), the module type is what fails.
    let file = cases::file(&cases::WIDTHS[..3]);
    let err = load_codes(&mut Plain::<Inner>::new(&device), &file, Unservable::Refuse).unwrap_err();
    assert!(
        err.to_string()
            .contains("`layers.0.weight`: its module is not a MoqLinear"),
        "{err}"
    );
}

#[test]
fn the_report_counts_the_bytes_held_on_the_device() {
    let device = Default::default();
    let file = cases::file(&cases::WIDTHS);
    let report: LoadReport = load_codes(
        &mut Served::<Inner>::new(&device),
        &file,
        Unservable::Dequantize,
    )
    .unwrap();
    let t = |name: &str| report.tensors.iter().find(|t| t.name == name).unwrap();
    // [16, 32] at 8 bits: 16 rows of 8 words, 4 groups of an f32 scale and an i32 zero point.
    assert_eq!(t("layers.0.weight").device_bytes, 16 * 8 * 4 + 4 * 8);
    // [32, 32] at 3 bits: ten codes a word, 4 words a row.
    assert_eq!(t("layers.1.weight").device_bytes, 32 * 4 * 4 + 8 * 8);
    // The 12-bit head is held as f32; biases too.
    assert_eq!(t("head.weight").device_bytes, 16 * 8 * 4);
    assert_eq!(t("head.bias").device_bytes, 8 * 4);
    let layers = report.device_bytes();
    assert_eq!(layers[0].layer, "layers.0");
    assert_eq!(layers[0].held, 16 * 8 * 4 + 4 * 8 + 32 * 4);
    assert_eq!(layers[0].f32, (16 * 32 + 32) * 4);
    let total = report.total();
    assert_eq!(total.held, layers.iter().map(|l| l.held).sum::<usize>());
    assert!(total.held < total.f16, "{report}");
    let text = report.to_string();
    assert!(text.contains("weight: 3-bit codes"), "{text}");
    assert!(text.contains("weight: dequantized (12-bit codes"), "{text}");
}

#[test]
fn bad_files_name_the_tensor() {
    let device = Default::default();
    let file = cases::file(&cases::WIDTHS);
    let load = |f: &moq_core::export::MoqFile| {
        load_codes(
            &mut Served::<Inner>::new(&device),
            f,
            Unservable::Dequantize,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let mut missing = file.clone();
    missing.quantized.retain(|e| e.name != "layers.2.weight");
    assert!(load(&missing).contains("no tensor `layers.2.weight`"));
    let mut other = file.clone();
    other
        .float
        .push(("decoder.bias".into(), vec![2], vec![0.0; 2]));
    assert!(load(&other).contains("tensor `decoder.bias` that the model does not"));
    let mut shape = file.clone();
    shape.quantized[0].shape = vec![32, 16];
    let err = load(&shape);
    assert!(
        err.contains("`layers.0.weight`: the file has shape [32, 16]"),
        "{err}"
    );
    // A file of another model: the digits MLP's names.
    let mut foreign = moq_core::export::MoqFile::default();
    foreign
        .float
        .push(("fc1.bias".into(), vec![4], vec![0.0; 4]));
    assert!(load(&foreign).contains("no tensor `layers.0.weight`"));
}

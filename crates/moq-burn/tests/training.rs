//! The MoQ optimizer wrapper on NdArray: straight-through gradients, the schedule it follows,
//! mixing, skipped steps, resume, and every setup error.

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer, SgdConfig};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use moq_burn::moq_hessian::{HessianEigenvalues, HessianLoss};
use moq_burn::{
    EigenvalueProvider, FixedEigenvalues, HessianProvider, Moq, MoqBurnError, MoqLayer,
    fake_quantize,
};
use moq_core::{QuantSpec, QuantType, QuantizeConfig, Schedule, plan};

type B = Autodiff<NdArray>;
type Inner = NdArray;

#[derive(Module, Debug)]
struct Net<B: Backend> {
    layers: Vec<Linear<B>>,
    head: Linear<B>,
}

impl<B: Backend> Net<B> {
    fn new(device: &B::Device) -> Self {
        // Deterministic weights without the backend's RNG (burn initializes parameters lazily,
        // so clones of a freshly built model would otherwise draw different ones).
        let linear = |d_in: usize, d_out: usize, salt: usize| {
            let w: Vec<f32> = (0..d_in * d_out)
                .map(|i| ((i * 7 + salt) as f32 * 0.61).sin() / (d_in as f32).sqrt())
                .collect();
            let b: Vec<f32> = (0..d_out)
                .map(|i| ((i + salt) as f32 * 1.3).cos() * 0.1)
                .collect();
            let mut l = LinearConfig::new(d_in, d_out).init(device);
            l.weight =
                Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device));
            l.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b, [d_out]),
                device,
            )));
            l
        };
        Self {
            layers: vec![linear(8, 16, 1), linear(16, 16, 2)],
            head: linear(16, 4, 3),
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

fn batch(step: usize) -> Tensor<B, 2> {
    let values: Vec<f32> = (0..32)
        .map(|i| (((i * 31 + step * 17) % 13) as f32 - 6.0) / 6.0)
        .collect();
    Tensor::from_data(TensorData::new(values, [4, 8]), &Default::default())
}

fn grads(model: &Net<B>, step: usize) -> GradientsParams {
    let loss = model.forward(batch(step)).powi_scalar(2).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

fn config(start: u32, target: u32, period: u64, offset: u64) -> QuantizeConfig {
    QuantizeConfig::builder()
        .bits(start, target)
        .period(period)
        .schedule_offset(offset)
        .groups(4)
        .build()
        .unwrap()
}

fn values<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn generic_fake_quantize_matches_the_reference_and_passes_gradients_straight_through() {
    let device = Default::default();
    let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    let spec = QuantSpec::new(4, QuantType::Asymmetric, 3);
    let mut expected = x.clone();
    moq_core::fake_quantize("w", &x, &mut expected, &spec).unwrap();

    let w = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [4, 6]), &device).require_grad();
    let q = fake_quantize(w.clone(), "w", &spec, 0.0).unwrap();
    assert_eq!(values(q.clone()), expected);
    // d/dw Σ c·Q(w) = c with the straight-through estimator.
    let c = Tensor::<B, 2>::from_data(
        TensorData::new((0..24).map(|i| i as f32).collect::<Vec<_>>(), [4, 6]),
        &device,
    );
    let g = (q * c.clone()).sum().backward();
    let grad = w.grad(&g).unwrap();
    assert_eq!(grad.into_data().to_vec::<f32>().unwrap(), values(c));

    let bad = Tensor::<Inner, 1>::from_floats([1.0, f32::NAN, 2.0], &device);
    let err = fake_quantize(
        bad,
        "enc.w",
        &QuantSpec::new(8, QuantType::Symmetric, 1),
        0.0,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `enc.w`: element 1 is NaN; nothing was written"
    );
}

#[test]
fn weights_are_the_quantized_masters_and_masters_get_the_gradient() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let cfg = config(8, 4, 3, 0);
    let mut optim = Moq::new(cfg.clone())
        .init(SgdConfig::new().init(), &model)
        .unwrap();
    assert_eq!(
        optim.quantized_params(),
        ["layers.0.weight", "layers.1.weight", "head.weight"]
    );

    let mut previous_masters: Option<Vec<Vec<f32>>> = None;
    for step in 0..10 {
        let g = grads(&model, step);
        let weight_grad = values(g.get::<Inner, 2>(model.head.weight.id).unwrap());
        model = optim.step(0.1, model, g);
        let masters: Vec<Vec<f32>> = optim
            .to_record()
            .masters
            .into_iter()
            .map(|m| values(m.unwrap()))
            .collect();
        // The head's master moved by −lr · (gradient taken at the quantized weights).
        if let Some(prev) = &previous_masters {
            for ((m, p), g) in masters[2].iter().zip(&prev[2]).zip(&weight_grad) {
                assert!(
                    (m - (p - 0.1 * g)).abs() < 1e-6,
                    "step {step}: {m} vs {p} − 0.1·{g}"
                );
            }
        }
        // The model holds Q(master) at the layer's current bits.
        let bits = optim.bits(2).unwrap();
        let spec = QuantSpec::from_config(&cfg, bits);
        let mut q = masters[2].clone();
        moq_core::fake_quantize("head.weight", &masters[2], &mut q, &spec).unwrap();
        assert_eq!(values(model.head.weight.val()), q, "step {step}");
        assert!(model.head.weight.val().is_require_grad());
        // Biases stay full precision (rank 1).
        assert_eq!(optim.layers().len(), 3);
        previous_masters = Some(masters);
    }
}

#[test]
fn bits_follow_the_planned_schedule_with_layer_patterns_and_eigenvalues() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let cfg = QuantizeConfig {
        eigenvalue: moq_core::EigenvalueConfig {
            enabled: true,
            ..Default::default()
        },
        ..config(9, 5, 2, 3)
    };
    let mut optim = Moq::new(cfg.clone())
        .layers("layers.{i}")
        .min_rank(1)
        .init(AdamConfig::new().init(), &model)
        .unwrap()
        .with_eigenvalues(FixedEigenvalues(vec![0.0, 0.6, 1.0]));
    let names: Vec<&str> = optim.layers().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["layers.0", "layers.1", "head.weight", "head.bias"]);
    assert_eq!(
        optim.layers()[0].params,
        ["layers.0.weight", "layers.0.bias"]
    );

    // The eigenvalues cover 3 of 4 layers: the schedule refuses them and says so (at the
    // first step before a drop, when they are first asked for).
    let mut error = None;
    for step in 0..8 {
        let g = grads(&model, step);
        model = optim.step(1e-3, model, g);
        error = error.or(optim.take_error());
    }
    assert!(
        error
            .unwrap()
            .to_string()
            .contains("3 eigenvalues given for 4 layers")
    );

    let mut optim = Moq::new(cfg.clone())
        .layers("layers.{i}")
        .min_rank(1)
        .init(AdamConfig::new().init(), &model)
        .unwrap()
        .with_eigenvalues(FixedEigenvalues(vec![0.0, 0.6, 1.0, 0.3]));
    let mut seen = Vec::new();
    let mut last = [None; 4];
    let steps = 120;
    for step in 0..steps {
        let g = grads(&model, step as usize);
        model = optim.step(1e-3, model, g);
        for (layer, last) in last.iter_mut().enumerate() {
            if optim.bits(layer) != *last {
                *last = optim.bits(layer);
                seen.push((step, layer, last.unwrap()));
            }
        }
    }
    assert!(optim.take_error().is_none());
    let mut schedule = Schedule::new(&cfg, 4).unwrap();
    schedule.set_eigenvalues(&[0.0, 0.6, 1.0, 0.3]).unwrap();
    let planned = plan(&schedule, steps);
    let mut expected: Vec<(u64, usize, u32)> = planned
        .layers
        .iter()
        .flat_map(|l| l.reached.iter().map(move |&(b, s)| (s, l.layer, b)))
        .collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    let finals: Vec<Option<u32>> = planned.layers.iter().map(|l| l.final_bits()).collect();
    assert_eq!(optim.layer_bits(), finals);
}

#[test]
fn mixing_blends_master_and_quantized_weights() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let cfg = QuantizeConfig::builder()
        .bits(4, 3)
        .period(100)
        .schedule_offset(0)
        .mixing(0.25)
        .build()
        .unwrap();
    let mut optim = Moq::new(cfg.clone())
        .include("head")
        .init(SgdConfig::new().init(), &model)
        .unwrap();
    for step in 0..3 {
        let g = grads(&model, step);
        model = optim.step(0.01, model, g);
        let rho = optim.mix_ratio(0);
        assert_eq!(rho, 1.0 - 0.25 * (step + 1) as f32);
        let master = values(optim.to_record().masters.remove(0).unwrap());
        let mut expected = master.clone();
        moq_core::fake_quantize_mixed(
            "head.weight",
            &master,
            &mut expected,
            &QuantSpec::from_config(&cfg, 4),
            rho,
        )
        .unwrap();
        assert_eq!(values(model.head.weight.val()), expected);
    }
}

#[test]
fn non_finite_gradients_skip_the_step() {
    let device = Default::default();
    let model = Net::<B>::new(&device);
    let mut optim = Moq::new(config(8, 4, 3, 0))
        .init(SgdConfig::new().init(), &model)
        .unwrap();
    let before = values(model.head.weight.val());
    let mut g = grads(&model, 0);
    let id = model.layers[0].bias.as_ref().unwrap().id;
    g.register::<Inner, 1>(id, Tensor::from_floats([f32::NAN; 16], &device));
    let model = optim.step(0.1, model, g);
    assert_eq!(optim.skipped_steps(), 1);
    assert_eq!(optim.status().snapshot().skipped_steps, 1);
    assert_eq!(optim.schedule().steps_taken(), 0);
    assert_eq!(values(model.head.weight.val()), before);
}

#[test]
fn resume_continues_bit_for_bit() {
    let device = Default::default();
    let start = Net::<B>::new(&device);
    let cfg = QuantizeConfig::builder()
        .bits(10, 4)
        .period(2)
        .schedule_offset(1)
        .groups(2)
        .rounding(moq_core::Rounding::Stochastic)
        .mixing(0.1)
        .build()
        .unwrap();
    let setup = |model: &Net<B>| {
        Moq::new(cfg.clone())
            .seed(5)
            .init(AdamConfig::new().init(), model)
            .unwrap()
    };
    let n = 12;

    let mut straight = start.clone();
    let mut optim = setup(&straight);
    for step in 0..2 * n {
        let g = grads(&straight, step);
        straight = optim.step(1e-2, straight, g);
    }

    let mut resumed = start.clone();
    let mut first = setup(&resumed);
    for step in 0..n {
        let g = grads(&resumed, step);
        resumed = first.step(1e-2, resumed, g);
    }
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let optim_bytes = recorder.record(first.to_record(), ()).unwrap();
    let model_bytes = recorder.record(resumed.into_record(), ()).unwrap();
    drop(first);

    let mut resumed =
        Net::<B>::new(&device).load_record(recorder.load(model_bytes, &device).unwrap());
    let mut second = setup(&resumed).load_record(recorder.load(optim_bytes, &device).unwrap());
    assert!(second.take_error().is_none());
    for step in n..2 * n {
        let g = grads(&resumed, step);
        resumed = second.step(1e-2, resumed, g);
    }
    assert_eq!(second.layer_bits(), optim.layer_bits());
    for (a, b) in straight.layers.iter().zip(&resumed.layers) {
        assert_eq!(values(a.weight.val()), values(b.weight.val()));
    }
    assert_eq!(
        values(straight.head.weight.val()),
        values(resumed.head.weight.val())
    );
}

#[test]
fn a_record_for_another_model_is_refused() {
    let device = Default::default();
    let model = Net::<B>::new(&device);
    let all = Moq::new(config(8, 4, 3, 0))
        .init(SgdConfig::new().init(), &model)
        .unwrap();
    let head_only = Moq::new(config(8, 4, 3, 0))
        .include("head")
        .init(SgdConfig::new().init(), &model)
        .unwrap();
    let head_only = head_only.load_record(all.to_record());
    let err = head_only.take_error().unwrap().to_string();
    assert!(
        err.starts_with("saved MoQ state: it quantizes 3 parameters"),
        "{err}"
    );
}

#[test]
fn setup_errors_name_the_pattern_or_parameter() {
    let device = Default::default();
    let model = Net::<B>::new(&device);
    let sgd = || SgdConfig::new().init();
    let err = |moq: Moq| match moq.init::<_, _, B>(sgd(), &model) {
        Ok(_) => panic!("setup should fail"),
        Err(e) => e,
    };
    let e = err(Moq::new(config(8, 4, 3, 0)).include("encoder"));
    assert_eq!(
        e.to_string(),
        "pattern `encoder` (include) matches no parameter of the model; parameter paths look like `layers.0.weight`"
    );
    assert!(matches!(
        err(Moq::new(config(8, 4, 3, 0)).layers("blocks.{i}")),
        MoqBurnError::NoMatch { .. }
    ));
    assert!(matches!(
        err(Moq::new(config(8, 4, 3, 0)).layers("layers")),
        MoqBurnError::BadPattern { .. }
    ));
    assert!(matches!(
        err(Moq::new(config(8, 4, 3, 0)).exclude("**.weight")),
        MoqBurnError::NothingSelected { .. }
    ));
    // head.weight has 64 elements: 3 groups do not divide it.
    let cfg = QuantizeConfig {
        groups: 3,
        ..config(8, 4, 3, 0)
    };
    assert_eq!(
        err(Moq::new(cfg).include("head")).to_string(),
        "tensor `head.weight`: 64 elements cannot be split into 3 equal groups"
    );
    let e = err(Moq::new(config(8, 4, 3, 0))
        .layers("layers.{i}")
        .min_rank(1)
        .bits_for("layers.0.bias", 8, 2));
    assert!(e.to_string().contains("different bit groups"), "{e}");
    // Parameters are never quantized silently with a broken config.
    let bad = QuantizeConfig {
        period: 0,
        ..config(8, 4, 3, 0)
    };
    assert!(matches!(err(Moq::new(bad)), MoqBurnError::Core(_)));
    // Distinct bits per group work.
    let optim = Moq::new(config(8, 4, 3, 0))
        .bits_for("head", 12, 8)
        .init::<_, _, B>(sgd(), &model)
        .unwrap();
    assert_eq!(optim.layers()[2].spec.start_bits, 12);
    assert_eq!(optim.layers()[0].spec.start_bits, 8);
}

/// Data-parallel replicas (as burn-train's multi-device strategy and DDP run them) see the same
/// summed gradients and hold identical quantized weights, stochastic rounding included:
/// quantization depends only on the step, the seed and the parameter.
#[test]
fn replicas_agree_bit_for_bit() {
    use burn::optim::MultiGradientsParams;
    use burn::tensor::backend::DeviceOps;

    let device: burn::backend::ndarray::NdArrayDevice = Default::default();
    let cfg = QuantizeConfig::builder()
        .bits(10, 4)
        .period(1)
        .schedule_offset(0)
        .groups(4)
        .rounding(moq_core::Rounding::Stochastic)
        .build()
        .unwrap();
    let setup = |model: &Net<B>| {
        Moq::new(cfg.clone())
            .seed(11)
            .init(AdamConfig::new().init(), model)
            .unwrap()
    };
    let mut replicas: Vec<Net<B>> = vec![Net::new(&device), Net::new(&device)];
    let mut optims: Vec<_> = replicas.iter().map(setup).collect();
    for step in 0..40 {
        for (model, optim) in replicas.iter_mut().zip(optims.iter_mut()) {
            // Two shards of the batch, one per (virtual) device; step_multi sums them.
            let multi = MultiGradientsParams {
                grads: vec![
                    (grads(model, 2 * step), device.id()),
                    (grads(model, 2 * step + 1), device.id()),
                ],
            };
            *model = optim.step_multi(1e-2, model.clone(), multi);
        }
    }
    assert_eq!(optims[0].layer_bits(), optims[1].layer_bits());
    assert_eq!(optims[0].layer_bits(), [Some(4); 3]);
    for (a, b) in replicas[0].layers.iter().zip(&replicas[1].layers) {
        assert_eq!(values(a.weight.val()), values(b.weight.val()));
    }
    assert_eq!(
        values(replicas[0].head.weight.val()),
        values(replicas[1].head.weight.val())
    );
}

mod learner {
    //! The wrapper inside burn-train's `Learner`, unchanged, with the multi-device strategy.

    use super::*;
    use burn::data::dataloader::DataLoaderBuilder;
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::InMemDataset;
    use burn::tensor::Int;
    use burn::tensor::backend::AutodiffBackend;
    use burn::train::{
        ClassificationOutput, ExecutionStrategy, InferenceStep, Learner, MultiDeviceOptim,
        SupervisedTraining, TrainOutput, TrainStep,
    };
    use std::collections::BTreeSet;

    #[derive(Clone, Debug)]
    pub(crate) struct Batch<B: Backend> {
        x: Tensor<B, 2>,
        y: Tensor<B, 1, Int>,
    }

    #[derive(Clone)]
    pub(crate) struct Stack;

    impl<B: Backend> Batcher<B, (Vec<f32>, i64), Batch<B>> for Stack {
        fn batch(&self, items: Vec<(Vec<f32>, i64)>, device: &B::Device) -> Batch<B> {
            let n = items.len();
            let x: Vec<f32> = items.iter().flat_map(|(x, _)| x.iter().copied()).collect();
            let y: Vec<i64> = items.iter().map(|(_, y)| *y).collect();
            Batch {
                x: Tensor::from_data(TensorData::new(x, [n, 8]), device),
                y: Tensor::from_data(TensorData::new(y, [n]), device),
            }
        }
    }

    fn classify<B: Backend>(net: &Net<B>, batch: Batch<B>) -> ClassificationOutput<B> {
        let output = net.forward(batch.x);
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&output.device())
            .forward(output.clone(), batch.y.clone());
        ClassificationOutput {
            loss,
            output,
            targets: batch.y,
        }
    }

    impl<B: AutodiffBackend> TrainStep for Net<B> {
        type Input = Batch<B>;
        type Output = ClassificationOutput<B>;
        fn step(&self, batch: Batch<B>) -> TrainOutput<ClassificationOutput<B>> {
            let item = classify(self, batch);
            TrainOutput::new(self, item.loss.backward(), item)
        }
    }

    impl<B: Backend> InferenceStep for Net<B> {
        type Input = Batch<B>;
        type Output = ClassificationOutput<B>;
        fn step(&self, batch: Batch<B>) -> ClassificationOutput<B> {
            classify(self, batch)
        }
    }

    pub(crate) fn items(n: usize, salt: usize) -> InMemDataset<(Vec<f32>, i64)> {
        InMemDataset::new(
            (0..n)
                .map(|i| {
                    let x: Vec<f32> = (0..8)
                        .map(|j| (((i + salt) * 13 + j * 7) % 11) as f32 / 5.0 - 1.0)
                        .collect();
                    let y = (x[0] + x[3] > 0.0) as i64 + 2 * (x[5] > 0.0) as i64;
                    (x, y)
                })
                .collect(),
        )
    }

    #[test]
    fn the_wrapper_trains_inside_the_learner_on_two_devices() {
        let device: burn::backend::ndarray::NdArrayDevice = Default::default();
        let model = Net::<B>::new(&device);
        let before = values(model.head.weight.val());
        let cfg = QuantizeConfig::builder()
            .bits(6, 3)
            .period(1)
            .schedule_offset(0)
            .groups(4)
            .build()
            .unwrap();
        let optim = Moq::new(cfg)
            .init(AdamConfig::new().init(), &model)
            .unwrap();
        let status = optim.status();
        assert_eq!(status.snapshot().bits, Vec::<Option<u32>>::new());
        let train = DataLoaderBuilder::new(Stack)
            .batch_size(8)
            .shuffle(1)
            .build(items(64, 0));
        let valid = DataLoaderBuilder::new(Stack)
            .batch_size(16)
            .build(items(32, 100));
        let dir = tempfile::tempdir().unwrap();
        let result = SupervisedTraining::new(dir.path(), train, valid)
            .num_epochs(3)
            .with_training_strategy(
                ExecutionStrategy::MultiDevice(
                    vec![device, device],
                    MultiDeviceOptim::OptimMainDevice,
                )
                .into(),
            )
            .launch(Learner::new(model, optim, 1e-2));
        let model = result.model;
        assert_ne!(values(model.head.weight.val()), before, "training happened");
        // The live status saw every step: 3 epochs of 64 items in batches of 8, over 2 devices.
        let seen = status.snapshot();
        assert!(seen.steps >= 12, "{seen:?}");
        assert_eq!(seen.bits, [Some(3); 3]);
        assert_eq!(seen.skipped_steps, 0);
        // 3-bit symmetric weights: at most 2^3 values in each of the 4 groups of every weight.
        for w in [
            values(model.layers[0].weight.val()),
            values(model.layers[1].weight.val()),
            values(model.head.weight.val()),
        ] {
            for group in w.chunks(w.len() / 4) {
                let distinct: BTreeSet<u32> = group.iter().map(|v| (v + 0.0).to_bits()).collect();
                assert!(
                    distinct.len() <= 8,
                    "{} distinct values in a 3-bit group",
                    distinct.len()
                );
            }
        }
    }
}

#[cfg(feature = "train")]
mod metrics {
    //! MoQ's schedule on burn-train's dashboard: the metrics' logged values against the
    //! wrapper's state.

    use super::learner::{Stack, items};
    use super::*;
    use burn::data::dataloader::DataLoaderBuilder;
    use burn::train::{Learner, SupervisedTraining};
    use moq_burn::{BitsMetric, MixingMetric};

    fn logged(dir: &std::path::Path, epoch: usize, metric: &str) -> Vec<f64> {
        let path = dir.join(format!("train/epoch-{epoch}/{metric}.log"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn metrics_show_the_schedule_in_the_learner() {
        let device: burn::backend::ndarray::NdArrayDevice = Default::default();
        let model = Net::<B>::new(&device);
        let cfg = QuantizeConfig::builder()
            .bits(7, 3)
            .period(1)
            .schedule_offset(0)
            .groups(4)
            .mixing(0.25)
            .build()
            .unwrap();
        let optim = Moq::new(cfg.clone())
            .bits_for("head", 6, 4)
            .init(AdamConfig::new().init(), &model)
            .unwrap();
        let status = optim.status();
        let bits = BitsMetric::new(status.clone());
        assert_eq!(bits.summary(), None);
        let train = DataLoaderBuilder::new(Stack)
            .batch_size(8)
            .build(items(64, 0));
        let valid = DataLoaderBuilder::new(Stack)
            .batch_size(16)
            .build(items(32, 100));
        let dir = tempfile::tempdir().unwrap();
        SupervisedTraining::new(dir.path(), train, valid)
            .num_epochs(2)
            .metric_train_numeric(bits.clone())
            .metric_train_numeric(MixingMetric::new(status.clone()))
            .launch(Learner::new(model, optim, 1e-2));

        // What the dashboard logged after each of the 16 steps, against a replay of the
        // schedule: layers.0 and layers.1 go 7 → 3, the head 6 → 4.
        let mut schedule = Schedule::with_layers(
            &cfg,
            vec![
                moq_core::LayerSpec::from_config(&cfg),
                moq_core::LayerSpec::from_config(&cfg),
                moq_core::LayerSpec {
                    start_bits: 6,
                    target_bits: 4,
                    ..moq_core::LayerSpec::from_config(&cfg)
                },
            ],
        )
        .unwrap();
        let (mut expected_bits, mut expected_mix) = (Vec::new(), Vec::new());
        for _ in 0..16 {
            schedule.step();
            let b: Vec<f64> = (0..3).map(|l| schedule.bits(l).unwrap() as f64).collect();
            expected_bits.push(b.iter().sum::<f64>() / 3.0);
            expected_mix.push((0..3).map(|l| schedule.mix_ratio(l) as f64).sum::<f64>() / 3.0);
        }
        let got_bits = [
            logged(dir.path(), 1, "MoQ_bits"),
            logged(dir.path(), 2, "MoQ_bits"),
        ]
        .concat();
        let got_mix = [
            logged(dir.path(), 1, "MoQ_mixing_ratio"),
            logged(dir.path(), 2, "MoQ_mixing_ratio"),
        ]
        .concat();
        assert_eq!(got_bits.len(), 16);
        for (step, (g, e)) in got_bits.iter().zip(&expected_bits).enumerate() {
            assert!(
                (g - e).abs() < 1e-9,
                "step {step}: logged {g} bits, schedule {e}"
            );
        }
        for (step, (g, e)) in got_mix.iter().zip(&expected_mix).enumerate() {
            assert!(
                (g - e).abs() < 1e-6,
                "step {step}: logged mixing {g}, schedule {e}"
            );
        }
        assert_eq!(bits.summary(), Some((3, 10.0 / 3.0, 4)));
        assert_eq!(status.snapshot().bits, [Some(3), Some(3), Some(4)]);
    }
}

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

/// Eigenvalues that depend on the step, with a log of when they were asked for.
struct StepEigenvalues {
    step: std::sync::Arc<std::sync::atomic::AtomicU64>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
}

fn eigen_at(step: u64, layers: usize) -> Vec<f32> {
    (0..layers as u64)
        .map(|l| ((step * 7 + l * 3) % 11) as f32 / 10.0)
        .map(|e| e.min(1.0))
        .collect()
}

impl<M> EigenvalueProvider<M> for StepEigenvalues {
    fn eigenvalues(
        &mut self,
        _model: &M,
        layers: &[MoqLayer],
    ) -> moq_burn::Result<Option<Vec<f32>>> {
        let step = self.step.load(std::sync::atomic::Ordering::SeqCst);
        self.asked.lock().unwrap().push(step);
        Ok(Some(eigen_at(step, layers.len())))
    }
}

#[test]
fn eigenvalues_asked_only_before_drops_give_deepspeeds_schedule() {
    let device = Default::default();
    for resolution in [1, 3] {
        let cfg = QuantizeConfig {
            eigenvalue: moq_core::EigenvalueConfig {
                enabled: true,
                gas_boundary_resolution: resolution,
                ..Default::default()
            },
            ..config(10, 5, 2, 3)
        };
        let step = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut model = Net::<B>::new(&device);
        let mut optim = Moq::new(cfg.clone())
            .init(SgdConfig::new().init(), &model)
            .unwrap()
            .with_eigenvalues(StepEigenvalues {
                step: step.clone(),
                asked: asked.clone(),
            });
        let layers = optim.layers().len();
        // DeepSpeed's rule: at every boundary while a layer is above its target.
        let mut reference = Schedule::new(&cfg, layers).unwrap();
        let mut boundaries = 0;
        for i in 0..400u64 {
            step.store(i, std::sync::atomic::Ordering::SeqCst);
            if (i + 1) % resolution == 0 && reference.needs_eigenvalues() {
                reference.set_eigenvalues(&eigen_at(i, layers)).unwrap();
                boundaries += 1;
            }
            reference.step();
            let g = grads(&model, i as usize);
            model = optim.step(1e-3, model, g);
            let expected: Vec<_> = (0..layers).map(|l| reference.bits(l)).collect();
            assert_eq!(
                optim.layer_bits(),
                expected,
                "step {i}, resolution {resolution}"
            );
        }
        let asked = asked.lock().unwrap().clone();
        assert!(!asked.is_empty());
        assert!(asked.iter().all(|s| (s + 1) % resolution == 0));
        assert!(
            asked.len() * 4 < boundaries,
            "asked {} times, DeepSpeed {boundaries}",
            asked.len()
        );
    }
}

/// The loss the provider differentiates: the training loss on one probe batch.
struct Probe;

impl HessianLoss for Probe {
    type Model<X: Backend> = Net<X>;

    fn model<X: Backend>(&self, device: &X::Device) -> Net<X> {
        Net::new(device)
    }

    fn loss<X: Backend>(&self, model: &Net<X>) -> Tensor<X, 1> {
        let device = model.head.weight.device();
        let x = Tensor::<X, 2>::from_data(batch(0).into_data(), &device);
        model.forward(x).powi_scalar(2).mean()
    }
}

#[test]
fn hessian_provider_feeds_the_schedule() {
    let device = Default::default();
    let cfg = QuantizeConfig {
        eigenvalue: moq_core::EigenvalueConfig {
            enabled: true,
            max_iter: 50,
            ..Default::default()
        },
        ..config(10, 6, 2, 0)
    };
    let mut model = Net::<B>::new(&device);
    let provider = HessianProvider::<B, _>::new(HessianEigenvalues::new(Probe, &cfg.eigenvalue));
    let history = provider.history();
    let mut optim = Moq::new(cfg)
        .layers("layers.{i}")
        .init(AdamConfig::new().init(), &model)
        .unwrap()
        .with_eigenvalues(provider);
    for step in 0..200 {
        let g = grads(&model, step);
        model = optim.step(1e-3, model, g);
    }
    assert!(optim.take_error().is_none());
    let records = history.records();
    assert!(records.len() >= 4, "{} computations", records.len());
    let names: Vec<&str> = optim.layers().iter().map(|l| l.name.as_str()).collect();
    for (i, record) in records.iter().enumerate() {
        let blocks: Vec<&str> = record
            .report
            .blocks
            .iter()
            .map(|b| b.block.as_str())
            .collect();
        assert_eq!(blocks, names);
        // nn::Linear is not twice differentiable in burn 0.21: finite differences.
        assert!(
            record
                .report
                .blocks
                .iter()
                .all(|b| !b.exact && b.eigenvalue.is_finite())
        );
        assert!(record.report.blocks.iter().all(|b| b.warm == (i > 0)));
        let max = record.report.normalized.iter().cloned().fold(0.0, f32::max);
        assert_eq!(max, 1.0);
    }
    assert_eq!(
        optim.schedule().eigenvalues(),
        Some(records.last().unwrap().report.normalized.as_slice())
    );
    // The stretched schedule is behind the unstretched one.
    let unstretched = plan(&Schedule::new(optim.config(), names.len()).unwrap(), 200);
    let behind = optim
        .layer_bits()
        .iter()
        .zip(&unstretched.layers)
        .any(|(bits, plan)| bits.unwrap() > plan.final_bits().unwrap());
    assert!(behind, "{:?}", optim.layer_bits());
}

#[test]
fn hessian_provider_resumes_bit_for_bit() {
    let device = Default::default();
    let cfg = QuantizeConfig {
        eigenvalue: moq_core::EigenvalueConfig {
            enabled: true,
            max_iter: 30,
            ..Default::default()
        },
        ..config(10, 6, 2, 0)
    };
    let setup = |model: &Net<B>| {
        let provider =
            HessianProvider::<B, _>::new(HessianEigenvalues::new(Probe, &cfg.eigenvalue).seed(4));
        let history = provider.history();
        let optim = Moq::new(cfg.clone())
            .layers("layers.{i}")
            .init(AdamConfig::new().init(), model)
            .unwrap()
            .with_eigenvalues(provider);
        (optim, history)
    };
    let n = 40;
    let mut straight = Net::<B>::new(&device);
    let (mut optim, straight_history) = setup(&straight);
    for step in 0..2 * n {
        let g = grads(&straight, step);
        straight = optim.step(1e-3, straight, g);
    }

    let mut resumed = Net::<B>::new(&device);
    let (mut first, _) = setup(&resumed);
    for step in 0..n {
        let g = grads(&resumed, step);
        resumed = first.step(1e-3, resumed, g);
    }
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let optim_bytes = recorder.record(first.to_record(), ()).unwrap();
    let model_bytes = recorder.record(resumed.into_record(), ()).unwrap();
    drop(first);
    let mut resumed =
        Net::<B>::new(&device).load_record(recorder.load(model_bytes, &device).unwrap());
    let (second, resumed_history) = setup(&resumed);
    let mut second = second.load_record(recorder.load(optim_bytes, &device).unwrap());
    assert!(second.take_error().is_none());
    for step in n..2 * n {
        let g = grads(&resumed, step);
        resumed = second.step(1e-3, resumed, g);
    }
    // The computations after the resume start warm, and find what the straight run found.
    let straight_records = straight_history.records();
    let after = resumed_history.records();
    assert!(!after.is_empty());
    let tail = &straight_records[straight_records.len() - after.len()..];
    for (a, b) in after.iter().zip(tail) {
        assert_eq!(a.report, b.report);
    }
    assert_eq!(second.layer_bits(), optim.layer_bits());
    assert_eq!(
        values(straight.head.weight.val()),
        values(resumed.head.weight.val())
    );
}

#[test]
fn export_gives_the_trained_weights_as_codes() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let cfg = config(8, 4, 2, 0);
    let mut optim = Moq::new(cfg)
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    let err = optim.export(&model).unwrap_err().to_string();
    assert!(err.contains("no quantizing step"), "{err}");
    for step in 0..40 {
        let g = grads(&model, step);
        model = optim.step(1e-2, model, g);
    }
    assert_eq!(optim.layer_bits(), [Some(4); 3]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    optim.export(&model).unwrap().save(&path).unwrap();
    let file = moq_core::export::MoqFile::load(&path).unwrap();

    let mut names: Vec<&str> = file.quantized.iter().map(|e| e.name.as_str()).collect();
    let mut expected = optim.quantized_params();
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let weights = [
        ("layers.0.weight", values(model.layers[0].weight.val())),
        ("layers.1.weight", values(model.layers[1].weight.val())),
        ("head.weight", values(model.head.weight.val())),
    ];
    for (name, used) in weights {
        let e = file.quantized.iter().find(|e| e.name == name).unwrap();
        assert_eq!(e.packed.bits, 4);
        let q = moq_core::unpack(&e.packed).unwrap();
        let mut back = vec![0.0f32; used.len()];
        moq_core::dequantize(&q, &mut back).unwrap();
        assert_eq!(
            back, used,
            "{name}: the codes give the weights the model used"
        );
        // Eight 4-bit codes per word, each row padded to whole words, and 4 f32 scales.
        let (rows, row_len) = (e.shape[0], e.shape[1]);
        assert_eq!(
            e.packed.size_bytes(),
            rows * row_len.div_ceil(8) * 4 + 4 * 4,
            "{name}"
        );
    }
    let bias = |name: &str| {
        file.float
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.clone())
    };
    assert_eq!(file.float.len(), 3);
    for (name, layer) in [
        ("layers.0.bias", &model.layers[0]),
        ("layers.1.bias", &model.layers[1]),
        ("head.bias", &model.head),
    ] {
        assert_eq!(
            bias(name),
            Some(values(layer.bias.as_ref().unwrap().val())),
            "{name}"
        );
    }

    // Back into a fresh model: every parameter equals the trained model's.
    let reloaded = moq_burn::load_dequantized(Net::<B>::new(&device), &file).unwrap();
    assert_eq!(
        values(reloaded.head.weight.val()),
        values(model.head.weight.val())
    );
    assert_eq!(
        values(reloaded.layers[1].bias.as_ref().unwrap().val()),
        values(model.layers[1].bias.as_ref().unwrap().val())
    );
    let mut other = file.clone();
    other.float.retain(|(n, _, _)| n != "head.bias");
    let err = moq_burn::load_dequantized(Net::<B>::new(&device), &other).unwrap_err();
    assert!(err.to_string().contains("no tensor `head.bias`"), "{err}");

    // The head as a QuantizedLinear computes what the trained head computes.
    let head = file
        .quantized
        .iter()
        .find(|e| e.name == "head.weight")
        .unwrap();
    let bias = bias("head.bias").unwrap();
    let q = moq_burn::QuantizedLinear::<Inner>::from_export(head, Some(&bias), &device).unwrap();
    assert_eq!(q.bits, 4);
    let x = Tensor::<Inner, 2>::from_data(
        TensorData::new(
            (0..48).map(|i| (i as f32 * 0.3).cos()).collect::<Vec<_>>(),
            [3, 16],
        ),
        &device,
    );
    let trained = model.valid().head.forward(x.clone());
    assert_eq!(values(q.weight().unwrap()), values(model.head.weight.val()));
    let got = values(q.forward(x));
    for (a, b) in got.iter().zip(values(trained)) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }
    let err = moq_burn::QuantizedLinear::<Inner>::from_export(head, Some(&[0.0; 3]), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias has 3 values for 4 outputs"), "{err}");
}

/// burn's own quantized tensors from MoQ codes dequantize to exactly the values of the codes
/// (NdArray loads Q8S only in burn 0.21; the wgpu tests cover Q4S); layouts burn has no
/// scheme for are named.
#[test]
fn burn_quantized_tensors_hold_the_codes() {
    use moq_core::{CodeLayout, ScaleFormat, pack, quantize, unpack};
    type B = NdArray;
    let device = Default::default();
    let (k, n) = (6, 64);
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    for (bits, groups, scales) in [(8, 1, ScaleFormat::F32), (8, 12, ScaleFormat::F16)] {
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
    }
    let refused = |bits, quant_type, groups, what: &str| {
        let q = quantize("w", &w, &QuantSpec::new(bits, quant_type, groups)).unwrap();
        let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
        let err = moq_burn::burn_scheme(&packed, &[k, n])
            .unwrap_err()
            .to_string();
        assert!(err.contains(what), "{err}");
    };
    refused(4, QuantType::Asymmetric, 6, "symmetric only");
    refused(3, QuantType::Symmetric, 6, "3-bit");
    refused(2, QuantType::Symmetric, 6, "Q2S");
    // Groups of 96 straddle rows of 64: not blocks.
    refused(8, QuantType::Symmetric, 4, "not blocks");
    // Groups of two whole rows are blocks of [2, 64].
    let q = quantize("w", &w, &QuantSpec::new(8, QuantType::Symmetric, 3)).unwrap();
    let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    let scheme = moq_burn::burn_scheme(&packed, &[k, n]).unwrap();
    assert_eq!(format!("{:?}", scheme.level), "Block(BlockSize([2, 64]))");
}

/// The inference twin of a trained model: each layer a `QuantizedLinear` at the bits it reached
/// (here 4, 3 and 6), computing what the trained (fake-quantized) model computes.
#[test]
fn quantized_twin_keeps_each_layers_bits_and_outputs() {
    use moq_burn::QuantizedLinear;
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let mut optim = Moq::new(config(8, 4, 2, 0))
        .bits_for("layers.1", 8, 3)
        .bits_for("head", 8, 6)
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    for step in 0..80 {
        let g = grads(&model, step);
        model = optim.step(1e-2, model, g);
    }
    let file = optim.export(&model).unwrap();
    let twin: Vec<QuantizedLinear<Inner>> = ["layers.0", "layers.1", "head"]
        .iter()
        .map(|p| QuantizedLinear::load(&file, p, &device).unwrap())
        .collect();
    assert_eq!(twin.iter().map(|l| l.bits).collect::<Vec<_>>(), [4, 3, 6]);
    let x = batch(3).inner();
    let hidden = twin[..2].iter().fold(x.clone(), |x, l| {
        burn::tensor::activation::tanh(l.forward(x))
    });
    let got = values(twin[2].forward(hidden));
    let expected = values(model.valid().forward(x));
    for (a, b) in got.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    let err = QuantizedLinear::<Inner>::load(&file, "layers.2", &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no quantized tensor `layers.2.weight`"),
        "{err}"
    );
}

//! Data parallelism: replicas agree bit for bit, and the wrapper trains inside burn-train's
//! `Learner` with the multi-device strategy.

use crate::common::*;

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

pub(crate) mod learner {
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

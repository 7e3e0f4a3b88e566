//! MoQ's schedule on burn-train's dashboard: the metrics' logged values against the
//! wrapper's state.

use crate::common::*;
use crate::parallel::learner::{Stack, items};
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

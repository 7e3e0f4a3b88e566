//! Hessian eigenvalues through `HessianProvider`: they feed the schedule, and resume bit for
//! bit.

use crate::common::*;

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
    let checkpoint = Checkpoint::save(resumed, first);
    let mut resumed = checkpoint.model();
    let (second, resumed_history) = setup(&resumed);
    let mut second = checkpoint.resume(second);
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

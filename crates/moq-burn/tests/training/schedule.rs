//! The bits each layer follows: the planner's schedule, layer patterns, eigenvalue factors, and
//! when eigenvalues are asked for.

use crate::common::*;

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

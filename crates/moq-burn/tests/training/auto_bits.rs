//! Second-order bit allocation in training (`Moq::auto_bits`): at the end of the warm-up each
//! layer's target becomes the width `moq_core::allocate` chooses on the same weights, the
//! schedule takes every layer there, and a resumed run keeps the allocation.

use moq_core::allocate::{Budget, Overhead, allocate, measure};

use crate::common::*;

const CANDIDATES: [u32; 5] = [2, 3, 4, 6, 8];
const SENSITIVITY: [f32; 3] = [1.0, 0.05, 0.5];

fn budget() -> Budget {
    Budget::AverageBits(4.0, Overhead::Excluded)
}

/// The wrapper with auto_bits: start 8 bits, period 2, offset 3, groups of 4 per tensor, one
/// layer per weight; eigenvalues fixed (used as sensitivities only: stretching is off).
fn wrapper(
    model: &Net<B>,
    budget: Budget,
) -> moq_burn::MoqOptimizer<impl Optimizer<Net<B>, B> + use<>, Net<B>, B> {
    Moq::new(config(8, 8, 2, 3))
        .auto_bits(budget, Some(&CANDIDATES))
        .init(AdamConfig::new().init(), model)
        .unwrap()
        .with_eigenvalues(FixedEigenvalues(SENSITIVITY.to_vec()))
}

/// What the library chooses for the model's weights.
fn expected(model: &Net<B>) -> Vec<u32> {
    let base = QuantSpec::new(8, QuantType::Symmetric, 4);
    let weights = [
        &model.layers[0].weight,
        &model.layers[1].weight,
        &model.head.weight,
    ];
    let curves: Vec<_> = weights
        .iter()
        .zip(SENSITIVITY)
        .enumerate()
        .map(|(i, (w, s))| {
            let [rows, cols] = w.dims();
            measure(
                &format!("w{i}"),
                &values(w.val()),
                [rows, cols],
                s as f64,
                &base,
                &CANDIDATES,
            )
            .unwrap()
        })
        .collect();
    allocate(&curves, &budget()).unwrap().bits
}

#[test]
fn auto_bits_takes_every_layer_to_its_allocated_width() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    // lr 0: the weights at the end of the warm-up are the initial ones.
    let want = expected(&model);
    let mut optim = wrapper(&model, budget());
    assert!(optim.allocation().is_none());
    for step in 0..200 {
        let g = grads(&model, step);
        model = optim.step(0.0, model, g);
        if step == 2 {
            assert!(optim.allocation().is_none(), "allocated during the warm-up");
        }
    }
    assert!(optim.take_error().is_none());
    let allocation = optim
        .allocation()
        .expect("allocated at the end of the warm-up");
    // The live status (what metrics read) carries it too.
    let snapshot = optim.status().snapshot();
    assert_eq!(
        snapshot.allocation.as_deref().map(Vec::as_slice),
        Some(allocation)
    );
    let chosen: Vec<u32> = allocation.iter().map(|a| a.bits).collect();
    assert_eq!(chosen, want);
    assert_eq!(
        optim.layer_bits(),
        want.iter().map(|&b| Some(b)).collect::<Vec<_>>()
    );
    let sizes: Vec<usize> = allocation.iter().map(|a| a.params).collect();
    assert_eq!(sizes, [128, 256, 64]);
    let average = allocation
        .iter()
        .map(|a| (a.params * a.bits as usize) as f64)
        .sum::<f64>()
        / 448.0;
    assert!(average <= 4.0, "{average}");
    assert!(
        want.iter().any(|&b| b != want[0]),
        "a mixed allocation: {want:?}"
    );
    // Each layer's report holds its error at every candidate, falling with the width.
    for a in allocation {
        assert_eq!(a.errors.iter().map(|e| e.0).collect::<Vec<_>>(), CANDIDATES);
        assert!(a.errors.windows(2).all(|p| p[1].1 <= p[0].1), "{a:?}");
    }
}

#[test]
fn a_resumed_run_keeps_the_allocation() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let mut optim = wrapper(&model, budget());
    for step in 0..10 {
        let g = grads(&model, step);
        model = optim.step(1e-3, model, g);
    }
    let checkpoint = Checkpoint::save(model.clone(), optim.clone());
    let mut resumed = checkpoint.resume(wrapper(&checkpoint.model(), budget()));
    let mut resumed_model = checkpoint.model();
    assert_eq!(resumed.allocation(), optim.allocation());
    assert_eq!(resumed.schedule(), optim.schedule());
    for step in 10..60 {
        let g = grads(&model, step);
        model = optim.step(1e-3, model, g);
        let g = grads(&resumed_model, step);
        resumed_model = resumed.step(1e-3, resumed_model, g);
    }
    assert_eq!(resumed.layer_bits(), optim.layer_bits());
    assert_eq!(
        values(resumed_model.head.weight.val()),
        values(model.head.weight.val())
    );
}

#[test]
fn a_budget_nothing_fits_is_reported_and_keeps_the_configured_targets() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let mut optim = wrapper(&model, Budget::AverageBits(1.0, Overhead::Excluded));
    for step in 0..6 {
        let g = grads(&model, step);
        model = optim.step(1e-3, model, g);
    }
    let err = optim
        .take_error()
        .expect("the allocation fails")
        .to_string();
    assert!(err.contains("below the smallest candidate"), "{err}");
    assert!(optim.allocation().is_none());
    assert!(optim.schedule().specs().iter().all(|s| s.target_bits == 8));
}

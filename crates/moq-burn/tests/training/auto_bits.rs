//! Second-order bit allocation in training (`Moq::auto_bits`): at the end of the warm-up each
//! layer's target becomes the width `moq_core::allocate` chooses on the same weights, the
//! schedule takes every layer there, and a resumed run keeps the allocation.

use moq_core::allocate::{Budget, LayerCurve, Overhead, allocate, measure};

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

/// Each weight's curve as the wrapper measures it (`start` bits configured).
fn curves(model: &Net<B>, start: u32) -> Vec<LayerCurve> {
    let base = QuantSpec::new(start, QuantType::Symmetric, 4);
    let weights = [
        &model.layers[0].weight,
        &model.layers[1].weight,
        &model.head.weight,
    ];
    weights
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
        .collect()
}

/// What the library chooses for the model's weights.
fn expected(model: &Net<B>) -> Vec<u32> {
    allocate(&curves(model, 8), &budget()).unwrap().bits
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

#[test]
fn qat_with_second_order_widths_trains_each_layer_at_its_width_and_spends_the_budget() {
    // Basic QAT at 3 bits (start = target, no schedule) with the bytes of the uniform 3-bit
    // export as the budget: every layer trains at its allocated width from the first
    // quantizing step, above 3 bits as well as below, and the export has those widths in the
    // budget's bytes.
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let budget = Budget::UniformBytes(3);
    let curves = curves(&model, 3);
    let want = allocate(&curves, &budget).unwrap().bits;
    // Rows of 8 and 16 codes pad 3-bit words as much as 4-bit ones, so the uniform 3-bit
    // export's bytes buy wider layers: the widths a start-width cap would have kept at 3.
    assert!(
        want.iter().any(|&b| b > 3),
        "a layer allocated above the uniform width: {want:?}"
    );
    let mut optim = Moq::new(config(3, 3, 2, 3))
        .auto_bits(budget, Some(&CANDIDATES))
        .init(AdamConfig::new().init(), &model)
        .unwrap()
        .with_eigenvalues(FixedEigenvalues(SENSITIVITY.to_vec()));
    for step in 0..4 {
        let g = grads(&model, step);
        model = optim.step(0.0, model, g);
    }
    assert!(optim.take_error().is_none());
    let chosen: Vec<u32> = optim.allocation().unwrap().iter().map(|a| a.bits).collect();
    assert_eq!(chosen, want);
    // At the first quantizing step already, not after a schedule's drops.
    assert_eq!(
        optim.layer_bits(),
        want.iter().map(|&b| Some(b)).collect::<Vec<_>>()
    );
    let file = optim.export(&model).unwrap();
    let names = ["layers.0.weight", "layers.1.weight", "head.weight"];
    let mut bytes = 0;
    for (name, &bits) in names.iter().zip(&want) {
        let e = file.quantized.iter().find(|e| e.name == *name).unwrap();
        assert_eq!(e.packed.bits, bits, "{name}");
        bytes += e.packed.size_bytes() as u64;
    }
    let uniform: u64 = curves
        .iter()
        .map(|c| {
            c.options
                .iter()
                .find(|o| o.bits == 3)
                .unwrap()
                .export_bytes
                .unwrap()
        })
        .sum();
    assert!(bytes <= uniform, "{bytes} bytes exported, budget {uniform}");
    // The budget is spent: no layer could move up to a width of lower error and still fit.
    for (l, c) in curves.iter().enumerate() {
        let at = |b: u32| c.options.iter().find(|o| o.bits == b).unwrap();
        for &up in CANDIDATES.iter().filter(|&&b| b > want[l]) {
            if at(up).error < at(want[l]).error {
                let grown =
                    bytes - at(want[l]).export_bytes.unwrap() + at(up).export_bytes.unwrap();
                assert!(
                    grown > uniform,
                    "layer {l} could take {up} bits in the budget"
                );
            }
        }
    }
}

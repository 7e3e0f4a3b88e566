//! One step of the wrapper: the straight-through estimator, masters and quantized weights,
//! mixing, and steps skipped for non-finite gradients.

use crate::common::*;

/// The NdArray path on a case worked by hand (the host path *is* moq-core's reference, so
/// comparing with it would prove nothing): 3-bit asymmetric grids (codes 0..=7), two groups.
#[test]
fn fake_quantize_gives_the_hand_computed_grid_and_passes_gradients_straight_through() {
    let device = Default::default();
    let x = vec![-1.0f32, 0.25, 0.5, 2.5, 0.0, 0.75, 1.75, 3.5];
    let spec = QuantSpec::new(3, QuantType::Asymmetric, 2);
    // Group 0: min −1, max 2.5, s = 3.5/7 = 0.5, z = round(1/0.5) = 2; x/s = −2, 0.5, 1, 5
    // rounds (ties to even) to −2, 0, 1, 5, plus z: 0, 2, 3, 7; (q − z)·s = −1, 0, 0.5, 2.5.
    // Group 1: min 0, max 3.5, s = 0.5, z = 0; x/s = 0, 1.5, 3.5, 7 rounds to 0, 2, 4, 7.
    let expected = [-1.0f32, 0.0, 0.5, 2.5, 0.0, 1.0, 2.0, 3.5];

    let w = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [2, 4]), &device).require_grad();
    let q = fake_quantize(w.clone(), "w", &spec, 0.0).unwrap();
    assert_eq!(values(q.clone()), expected);
    // d/dw Σ c·Q(w) = c with the straight-through estimator.
    let c = Tensor::<B, 2>::from_data(
        TensorData::new((0..8).map(|i| i as f32).collect::<Vec<_>>(), [2, 4]),
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

/// `quantize_training.enabled: false` (DeepSpeed's default) leaves training alone: the wrapped
/// optimizer gives bit for bit the weights of the bare one, and nothing is quantized.
#[test]
fn a_disabled_config_passes_steps_through() {
    let device = Default::default();
    let disabled = QuantizeConfig::from_json_str(
        r#"{"quantize_training": {"enabled": false, "quantize_bits": {"start_bits": 8, "target_bits": 4},
            "quantize_schedule": {"quantize_period": 1, "schedule_offset": 0}}}"#,
    )
    .unwrap();
    assert!(!disabled.enabled);
    let mut wrapped_model = Net::<B>::new(&device);
    let mut bare_model = Net::<B>::new(&device);
    let mut wrapped = Moq::new(disabled)
        .init(AdamConfig::new().init(), &wrapped_model)
        .unwrap();
    let mut bare = AdamConfig::new().init();
    for step in 0..6 {
        let g = grads(&wrapped_model, step);
        wrapped_model = wrapped.step(1e-2, wrapped_model, g);
        let g = grads(&bare_model, step);
        bare_model = bare.step(1e-2, bare_model, g);
    }
    assert_eq!(
        values(wrapped_model.head.weight.val()),
        values(bare_model.head.weight.val())
    );
    assert_eq!(wrapped.layer_bits(), vec![None; wrapped.layers().len()]);
}

//! Save and resume: bit for bit, and a record of another model refused.

use crate::common::*;

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
    let checkpoint = Checkpoint::save(resumed, first);
    let mut resumed = checkpoint.model();
    let mut second = checkpoint.resume(setup(&resumed));
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

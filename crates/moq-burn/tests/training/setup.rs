//! Setup errors name the pattern or the parameter.

use crate::common::*;

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

//! The tests of [`super`] (`schedule/mod.rs`).

use super::*;
use crate::config::QuantizeConfig;

fn cfg(start: u32, target: u32, period: u64, offset: u64) -> QuantizeConfig {
    QuantizeConfig::builder()
        .bits(start, target)
        .period(period)
        .schedule_offset(offset)
        .build()
        .unwrap()
}

fn drop_steps(schedule: &mut Schedule, steps: u64) -> Vec<(u64, usize, u32)> {
    let mut out = Vec::new();
    for _ in 0..steps {
        let r = schedule.step();
        out.extend(r.drops.iter().map(|d| (r.step, d.layer, d.to)));
    }
    out
}

#[test]
fn targets_are_set_before_quantizing_only() {
    let config = QuantizeConfig::builder()
        .bits(8, 4)
        .period(2)
        .schedule_offset(1)
        .build()
        .unwrap();
    let mut s = Schedule::new(&config, 2).unwrap();
    assert!(s.set_targets(&[3]).is_err());
    assert!(s.set_targets(&[9, 4]).is_err(), "above the start width");
    s.set_targets(&[6, 2]).unwrap();
    for _ in 0..200 {
        s.step();
    }
    assert_eq!((s.bits(0), s.bits(1)), (Some(6), Some(2)));
    let e = s.set_targets(&[5, 5]).unwrap_err().to_string();
    assert!(e.contains("before the first quantizing step"), "{e}");
}

#[test]
fn a_layer_without_a_schedule_trains_at_its_new_target() {
    // Basic QAT (start = target = 3): each layer's start moves with its target, above or
    // below; a scheduled layer (MoQ, 8 → 3) keeps its start and may not go above it.
    let config = QuantizeConfig::builder()
        .bits(3, 3)
        .period(2)
        .schedule_offset(1)
        .build()
        .unwrap();
    let mut s = Schedule::new(&config, 3).unwrap();
    s.set_targets(&[4, 2, 3]).unwrap();
    let widths: Vec<(u32, u32)> = s
        .specs()
        .iter()
        .map(|l| (l.start_bits, l.target_bits))
        .collect();
    assert_eq!(widths, [(4, 4), (2, 2), (3, 3)]);
    s.step();
    assert_eq!(s.bits(0), None, "the warm-up step does not quantize");
    s.step();
    assert_eq!(
        (s.bits(0), s.bits(1), s.bits(2)),
        (Some(4), Some(2), Some(3))
    );
    for _ in 0..50 {
        let report = s.step();
        assert!(report.drops.is_empty(), "{report:?}");
    }
    let mut moq = Schedule::new(&cfg(8, 3, 2, 0), 2).unwrap();
    let e = moq.set_targets(&[4, 9]).unwrap_err().to_string();
    assert!(e.contains("layer 1"), "{e}");
    moq.set_targets(&[4, 8]).unwrap();
    assert_eq!(moq.specs()[0].start_bits, 8);
    moq.step();
    assert_eq!((moq.bits(0), moq.bits(1)), (Some(8), Some(8)));
}

#[test]
fn hand_computed_drops() {
    let mut s = Schedule::new(&cfg(12, 8, 10, 0), 1).unwrap();
    assert_eq!(s.bits(0), None);
    assert_eq!(
        drop_steps(&mut s, 200),
        [(9, 0, 11), (19, 0, 10), (39, 0, 9), (79, 0, 8)]
    );
    assert!(!s.needs_eigenvalues());
}

#[test]
fn offset_delays_quantization() {
    // Offset 5: steps 0..4 are not quantized, q = 1 at step 5, drops at q = 3, 6.
    let mut s = Schedule::new(&cfg(8, 6, 3, 5), 2).unwrap();
    for step in 0..5 {
        let r = s.step();
        assert!(!r.quantize, "step {step}");
        assert_eq!(s.bits(0), None);
    }
    assert!(s.step().quantize);
    assert_eq!(s.bits(1), Some(8));
    assert_eq!(
        drop_steps(&mut s, 100),
        [(7, 0, 7), (7, 1, 7), (10, 0, 6), (10, 1, 6)]
    );
}

#[test]
fn eigen_factor_stretches_the_period() {
    // e = 0.6 → factor 3: drops at q = 4, 4·6 = 24, 24·6 = 144.
    let mut s = Schedule::new(&cfg(10, 7, 4, 0), 2).unwrap();
    s.set_eigenvalues(&[0.6, 0.0]).unwrap();
    let drops = drop_steps(&mut s, 200);
    let layer0: Vec<u64> = drops.iter().filter(|d| d.1 == 0).map(|d| d.0).collect();
    let layer1: Vec<u64> = drops.iter().filter(|d| d.1 == 1).map(|d| d.0).collect();
    assert_eq!(layer0, [3, 23, 143]);
    assert_eq!(layer1, [3, 7, 15]);
    assert_eq!(eigen_factor(Some(1.0)), 5);
    assert_eq!(eigen_factor(Some(0.24)), 1);
    assert_eq!(eigen_factor(Some(0.25)), 2);
    assert!(s.set_eigenvalues(&[0.5]).is_err());
    assert!(s.set_eigenvalues(&[0.5, 1.5]).is_err());
    assert!(s.set_eigenvalues(&[0.5, f32::NAN]).is_err());
}

#[test]
fn drops_within_predicts_the_next_drops() {
    for (offset, window) in [(0, 1), (0, 3), (5, 1), (5, 4), (7, 10)] {
        let mut schedule = Schedule::new(&cfg(12, 8, 3, offset), 2).unwrap();
        for _ in 0..200 {
            let mut ahead = schedule.clone();
            let predicted = schedule.drops_within(window);
            let actual = (0..window).any(|_| !ahead.step().drops.is_empty());
            assert_eq!(
                predicted,
                actual,
                "offset {offset}, window {window}, step {}",
                schedule.steps_taken()
            );
            schedule.step();
        }
    }
}

#[test]
fn mixing_ratio_falls_and_resets_at_drops() {
    let config = QuantizeConfig::builder()
        .bits(9, 8)
        .period(4)
        .schedule_offset(1)
        .mixing(0.25)
        .build()
        .unwrap();
    let mut s = Schedule::new(&config, 1).unwrap();
    let mut ratios = Vec::new();
    for _ in 0..9 {
        s.step();
        ratios.push(s.mix_ratio(0));
    }
    // Step 0 is before the offset; q = 1, 2, 3 lower ρ; q = 4 drops (ρ = 1); then lower again.
    assert_eq!(ratios, [1.0, 0.75, 0.5, 0.25, 1.0, 0.75, 0.5, 0.25, 0.0]);
    let no_mix = Schedule::new(&cfg(9, 8, 4, 0), 1).unwrap();
    assert_eq!(no_mix.mix_ratio(0), 0.0);
}

#[test]
fn per_layer_specs() {
    let config = cfg(12, 8, 10, 0);
    let specs = vec![
        LayerSpec {
            start_bits: 12,
            target_bits: 8,
            period: 10,
        },
        LayerSpec {
            start_bits: 8,
            target_bits: 4,
            period: 2,
        },
        LayerSpec {
            start_bits: 8,
            target_bits: 8,
            period: 2,
        },
    ];
    let mut s = Schedule::with_layers(&config, specs).unwrap();
    s.step();
    assert_eq!(
        (s.bits(0), s.bits(1), s.bits(2), s.bits(3)),
        (Some(12), Some(8), Some(8), None)
    );
    drop_steps(&mut s, 100);
    assert_eq!(
        (s.bits(0), s.bits(1), s.bits(2)),
        (Some(8), Some(4), Some(8))
    );
    let bad = vec![LayerSpec {
        start_bits: 4,
        target_bits: 8,
        period: 2,
    }];
    assert!(Schedule::with_layers(&config, bad).is_err());
    assert!(Schedule::new(&config, 0).is_err());
}

#[test]
fn serialized_state_resumes_bit_for_bit() {
    let config = QuantizeConfig::builder()
        .bits(14, 4)
        .period(3)
        .schedule_offset(2)
        .mixing(0.01)
        .build()
        .unwrap();
    let mut straight = Schedule::new(&config, 3).unwrap();
    straight.set_eigenvalues(&[0.1, 0.5, 0.9]).unwrap();
    let mut resumed = straight.clone();
    let a = drop_steps(&mut straight, 500);
    let mut b = drop_steps(&mut resumed, 237);
    let text = serde_json::to_string(&resumed).unwrap();
    let mut resumed: Schedule = serde_json::from_str(&text).unwrap();
    b.extend(drop_steps(&mut resumed, 263));
    assert_eq!(a, b);
    assert_eq!(straight, resumed);
}

#[test]
fn corrupt_saved_state_is_an_error() {
    let s = Schedule::new(&cfg(12, 8, 10, 0), 2).unwrap();
    let mut v = serde_json::to_value(&s).unwrap();
    v["eigenvalues"] = serde_json::json!([0.5]);
    let err = serde_json::from_value::<Schedule>(v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 eigenvalues given for 2 layers"), "{err}");
    let mut v = serde_json::to_value(&s).unwrap();
    v["layers"][1]["bits"] = serde_json::json!(3);
    let err = serde_json::from_value::<Schedule>(v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("layer 1 is at 3 bits"), "{err}");
    let mut v = serde_json::to_value(&s).unwrap();
    v["specs"] = serde_json::json!([]);
    assert!(serde_json::from_value::<Schedule>(v).is_err());
}

fn deadline_cfg(start: u32, target: u32, offset: u64, deadline: u64) -> QuantizeConfig {
    QuantizeConfig::builder()
        .bits(start, target)
        .schedule_offset(offset)
        .deadline(deadline)
        .build()
        .unwrap()
}

#[test]
fn the_deadline_is_given_back_as_it_was_set() {
    // u64::MAX from step 0 is u64::MAX + 1 quantizing steps, saturated: the step itself is
    // kept, in the schedule and in its saved state.
    for (offset, deadline) in [(0, u64::MAX), (7, u64::MAX), (5, 84), (0, 0)] {
        let s = Schedule::new(&deadline_cfg(8, 8, offset, deadline), 1).unwrap();
        assert_eq!(s.deadline(), Some(deadline), "offset {offset}");
        let back: Schedule = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(back.deadline(), Some(deadline));
    }
    // A state saved before the step was kept: derived from the quantizing step, as then.
    let s = Schedule::new(&deadline_cfg(12, 8, 5, 84), 1).unwrap();
    let mut v = serde_json::to_value(&s).unwrap();
    v.as_object_mut().unwrap().remove("deadline_step");
    let old: Schedule = serde_json::from_value(v).unwrap();
    assert_eq!(old.deadline(), Some(84));
    assert_eq!(old, s);
}

#[test]
fn a_deadline_places_the_doubling_schedule_before_it() {
    // 12 → 8 by optimizer step 84, quantizing from step 5: D = 80 quantizing steps.
    let mut s = Schedule::new(&deadline_cfg(12, 8, 5, 84), 2).unwrap();
    assert_eq!(s.deadline(), Some(84));
    // Layer 1 as sensitive as can be (factor 5): its drops in the last fifth.
    s.set_eigenvalues(&[0.0, 1.0]).unwrap();
    let drops = drop_steps(&mut s, 200);
    let of = |layer| -> Vec<u64> { drops.iter().filter(|d| d.1 == layer).map(|d| d.0).collect() };
    // Quantizing step q is optimizer step q + 4.
    assert_eq!(of(0), [14, 24, 44, 84]);
    assert_eq!(of(1), [70, 72, 76, 84]);
    assert_eq!((s.bits(0), s.bits(1)), (Some(8), Some(8)));
}

#[test]
fn a_deadline_holds_when_targets_and_factors_change() {
    let mut s = Schedule::new(&deadline_cfg(16, 8, 0, 99), 3).unwrap();
    // A lower target for one layer (auto_bits): its eight more drops fit too.
    s.set_targets(&[8, 2, 8]).unwrap();
    assert!(s.set_targets(&[8, 8, 8]).is_ok());
    s.set_targets(&[8, 2, 8]).unwrap();
    for step in 0..=99u64 {
        if step % 17 == 3 {
            let e = (step as f32 / 99.0).min(1.0);
            s.set_eigenvalues(&[e, 1.0 - e, 0.5]).unwrap();
        }
        s.step();
    }
    assert_eq!(
        (s.bits(0), s.bits(1), s.bits(2)),
        (Some(8), Some(2), Some(8))
    );
    // Too many drops for the steps left: refused, nothing changed.
    let mut s = Schedule::new(&deadline_cfg(16, 12, 0, 9), 1).unwrap();
    let err = s.set_targets(&[1]).unwrap_err().to_string();
    assert!(
        err.contains("15 drops") && err.contains("10 quantizing steps"),
        "{err}"
    );
    assert_eq!(s.specs()[0].target_bits, 12);
}

#[test]
fn a_layer_whose_factor_falls_catches_up_over_the_time_left() {
    // 12 → 8 by quantizing step 600: the most sensitive factor first (window [480, 600]).
    let mut s = Schedule::new(&deadline_cfg(12, 8, 0, 599), 1).unwrap();
    s.set_eigenvalues(&[1.0]).unwrap();
    let mut drops = drop_steps(&mut s, 450);
    assert!(drops.is_empty());
    // Judged insensitive now: its plain plan (75, 150, 300, 600) is mostly past. It owes
    // three drops and spreads them, doubling, from now (450) to the deadline.
    s.set_eigenvalues(&[0.0]).unwrap();
    drops.extend(drop_steps(&mut s, 200));
    let steps: Vec<u64> = drops.iter().map(|d| d.0).collect();
    assert_eq!(steps, [468, 487, 524, 599]);
    // The next computation, the factor unchanged: the catch-up window stays.
    let mut s = Schedule::new(&deadline_cfg(12, 8, 0, 599), 1).unwrap();
    s.set_eigenvalues(&[1.0]).unwrap();
    drop_steps(&mut s, 450);
    s.set_eigenvalues(&[0.0]).unwrap();
    let mut again = drop_steps(&mut s, 30);
    s.set_eigenvalues(&[0.0]).unwrap();
    again.extend(drop_steps(&mut s, 170));
    assert_eq!(again, drops);
}

#[test]
fn a_saved_deadline_schedule_is_checked_and_resumes() {
    let mut s = Schedule::new(&deadline_cfg(12, 4, 2, 300), 2).unwrap();
    s.set_eigenvalues(&[0.3, 0.8]).unwrap();
    let mut straight = s.clone();
    let a = drop_steps(&mut straight, 320);
    let mut b = drop_steps(&mut s, 150);
    let text = serde_json::to_string(&s).unwrap();
    let mut resumed: Schedule = serde_json::from_str(&text).unwrap();
    b.extend(drop_steps(&mut resumed, 170));
    assert_eq!(a, b);
    let mut v = serde_json::to_value(&resumed).unwrap();
    v["step"] = serde_json::json!(150);
    v["quantizing_steps"] = serde_json::json!(148);
    v["layers"][0]["bits"] = serde_json::json!(12);
    v["layers"][0]["threshold"] = serde_json::json!(296);
    let err = serde_json::from_value::<Schedule>(v)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit the deadline"), "{err}");
}

proptest::proptest! {
    /// Whatever the factors and whenever they change, every layer is at its target after
    /// the deadline's step, never below it, and never drops before quantization starts.
    #[test]
    fn deadline_schedules_reach_every_target_by_the_deadline(
        widths in proptest::collection::vec((1u32..=16, 0u32..=15), 1..6),
        offset in 0u64..30,
        // Tight deadlines most of all: a window shorter than the drops left is the hard case.
        slack in proptest::prop_oneof![0u64..4, 0u64..300],
        updates in proptest::collection::vec(
            (0.0f64..1.0, proptest::collection::vec(0.0f32..=1.0, 6)), 0..6),
    ) {
        let specs: Vec<LayerSpec> = widths
            .iter()
            .map(|&(start, drops)| LayerSpec {
                start_bits: start,
                target_bits: start.saturating_sub(drops).max(1),
                period: 1,
            })
            .collect();
        let most = specs.iter().map(|s| s.start_bits - s.target_bits).max().unwrap();
        // The tightest deadline that fits is `most` quantizing steps.
        let deadline = offset + u64::from(most.max(1)) - 1 + slack;
        let config = QuantizeConfig::builder().bits(16, 16).schedule_offset(offset)
            .deadline(deadline).build().unwrap();
        let mut s = Schedule::with_layers(&config, specs.clone()).unwrap();
        for step in 0..=deadline + 3 {
            for (at, e) in &updates {
                if (at * (deadline + 1) as f64) as u64 == step {
                    s.set_eigenvalues(&e[..specs.len()]).unwrap();
                }
            }
            let r = s.step();
            proptest::prop_assert!(r.drops.is_empty() || step >= offset);
            for (layer, spec) in specs.iter().enumerate() {
                let bits = s.bits(layer).unwrap_or(spec.start_bits);
                proptest::prop_assert!(bits >= spec.target_bits);
                if step >= deadline {
                    proptest::prop_assert_eq!(bits, spec.target_bits, "layer {} at step {}", layer, step);
                }
            }
        }
    }

    /// Of two layers with the same widths, the more sensitive one (the larger factor)
    /// reaches no width earlier than the other.
    #[test]
    fn sensitive_layers_drop_later(
        start in 2u32..=16, drops in 1u32..=15, offset in 0u64..20, slack in 0u64..500,
        e in proptest::collection::vec(0.0f32..=1.0, 2),
    ) {
        let target = start.saturating_sub(drops).max(1);
        let deadline = offset + u64::from(start - target) - 1 + slack;
        let mut s = Schedule::new(&deadline_cfg(start, target, offset, deadline), 2).unwrap();
        s.set_eigenvalues(&e).unwrap();
        let (sensitive, other) = if eigen_factor(Some(e[0])) >= eigen_factor(Some(e[1])) { (0, 1) } else { (1, 0) };
        for _ in 0..=deadline {
            s.step();
            proptest::prop_assert!(s.bits(sensitive) >= s.bits(other));
        }
    }
}

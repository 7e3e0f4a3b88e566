//! The tests of [`super`] (`allocate/mod.rs`).

use super::*;
use crate::rng::Rng;

/// A random problem: `layers` layers of random sizes, sensitivities and decreasing errors.
fn problem(rng: &mut Rng, layers: usize, widths: &[u32]) -> Vec<LayerCurve> {
    (0..layers)
        .map(|l| {
            let params = 1 + (rng.next_f64() * 50.0) as usize;
            let mut error = 1.0 + rng.next_f64() * 10.0;
            LayerCurve {
                name: format!("l{l}"),
                params,
                sensitivity: if rng.next_f64() < 0.1 {
                    0.0
                } else {
                    rng.next_f64() * 5.0
                },
                options: widths
                    .iter()
                    .map(|&bits| {
                        error *= 0.2 + 0.7 * rng.next_f64();
                        WidthOption {
                            bits,
                            error,
                            overhead_bits: (rng.next_f64() * 64.0) as u64,
                            export_bytes: Some((params * bits as usize).div_ceil(8) as u64),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The optimum by trying every combination.
fn brute_force(layers: &[LayerCurve], budget: &Budget, capacity: u64) -> Option<f64> {
    let k = layers[0].options.len();
    let mut best: Option<f64> = None;
    for code in 0..k.pow(layers.len() as u32) {
        let (mut c, mut obj, mut rest) = (0u64, 0.0f64, code);
        for l in layers {
            let o = &l.options[rest % k];
            rest /= k;
            c += cost(l, o, budget).unwrap();
            obj += l.sensitivity * o.error;
        }
        if c <= capacity && best.is_none_or(|b| obj < b) {
            best = Some(obj);
        }
    }
    best
}

#[test]
fn the_optimum_of_every_small_problem_is_found() {
    let mut rng = Rng::new(20_261_201);
    for case in 0..400 {
        let widths: &[u32] = if case % 2 == 0 {
            &[2, 4, 8]
        } else {
            &[2, 3, 4, 6]
        };
        let layers = problem(&mut rng, 1 + case % 5, widths);
        let budget = match case % 3 {
            0 => Budget::AverageBits(2.0 + rng.next_f64() * 6.0, Overhead::Excluded),
            1 => Budget::AverageBits(2.5 + rng.next_f64() * 6.0, Overhead::Included),
            _ => Budget::Bytes((rng.next_f64() * 200.0) as u64 + 10),
        };
        match allocate(&layers, &budget) {
            Ok(a) => {
                let optimum = brute_force(&layers, &budget, a.capacity).unwrap();
                assert!(
                    (a.objective - optimum).abs() <= 1e-9 * optimum.max(1.0),
                    "case {case}: {} against the optimum {optimum}",
                    a.objective
                );
                let spent: u64 = layers
                    .iter()
                    .zip(&a.bits)
                    .map(|(l, &b)| {
                        cost(l, l.options.iter().find(|o| o.bits == b).unwrap(), &budget).unwrap()
                    })
                    .sum();
                assert_eq!(spent, a.cost);
                assert!(a.cost <= a.capacity, "case {case}: over budget");
            }
            Err(e) => {
                let capacity = match budget {
                    Budget::AverageBits(b, _) => {
                        (b * layers.iter().map(|l| l.params as f64).sum::<f64>()) as u64
                    }
                    Budget::Bytes(b) => b,
                    Budget::UniformBytes(_) => unreachable!("not generated"),
                };
                assert!(
                    brute_force(&layers, &budget, capacity).is_none(),
                    "case {case}: refused a feasible problem: {e}"
                );
            }
        }
    }
}

/// Split in halves down to single layers (one back-pointer kept at a time), the programme
/// finds the same optimum as with every back-pointer kept, within the same capacity.
#[test]
fn splitting_the_layers_in_halves_finds_the_same_optimum() {
    let mut rng = Rng::new(20_261_207);
    for case in 0..200 {
        let layers = problem(&mut rng, 2 + case % 23, &[1, 2, 3, 4, 6, 8]);
        let budget = match case % 2 {
            0 => Budget::AverageBits(1.5 + rng.next_f64() * 6.0, Overhead::Excluded),
            _ => Budget::Bytes((rng.next_f64() * 600.0) as u64 + 20),
        };
        let (Ok(whole), split) = (
            allocate(&layers, &budget),
            allocate_within(&layers, &budget, 1),
        ) else {
            assert!(allocate_within(&layers, &budget, 1).is_err(), "case {case}");
            continue;
        };
        let split = split.unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert!(
            (split.objective - whole.objective).abs() <= 1e-9 * whole.objective.max(1.0),
            "case {case}: {} split, {} whole",
            split.objective,
            whole.objective
        );
        assert!(split.cost <= split.capacity, "case {case}: over budget");
        assert_eq!(split.capacity, whole.capacity);
    }
}

#[test]
fn more_budget_never_raises_the_objective() {
    let mut rng = Rng::new(7);
    for _ in 0..50 {
        let layers = problem(&mut rng, 6, &DEFAULT_CANDIDATES);
        let mut last = f64::INFINITY;
        for tenth in 20..=80 {
            let budget = Budget::AverageBits(tenth as f64 / 10.0, Overhead::Excluded);
            let a = allocate(&layers, &budget).unwrap();
            assert!(a.objective <= last, "{} after {last}", a.objective);
            assert!(a.average_bits <= tenth as f64 / 10.0 + 1e-12);
            last = a.objective;
        }
    }
}

#[test]
fn the_more_sensitive_of_two_equal_layers_never_gets_fewer_bits() {
    let mut rng = Rng::new(11);
    for _ in 0..200 {
        let mut layers = problem(&mut rng, 4, &DEFAULT_CANDIDATES);
        // Layers 0 and 1: the same size and error curve, different sensitivities.
        layers[1].params = layers[0].params;
        layers[1].options = layers[0].options.clone();
        let budget = Budget::AverageBits(2.0 + rng.next_f64() * 6.0, Overhead::Excluded);
        let a = allocate(&layers, &budget).unwrap();
        let (s0, s1) = (layers[0].sensitivity, layers[1].sensitivity);
        if s0 > s1 {
            assert!(a.bits[0] >= a.bits[1], "{s0} vs {s1}: {:?}", a.bits);
        } else if s1 > s0 {
            assert!(a.bits[1] >= a.bits[0], "{s0} vs {s1}: {:?}", a.bits);
        }
    }
}

#[test]
fn the_uniform_budget_is_the_uniform_exports_size() {
    let mut rng = Rng::new(11);
    for _ in 0..50 {
        let layers = problem(&mut rng, 4, &[2, 3, 4, 8]);
        let uniform: u64 = layers
            .iter()
            .map(|l| l.options[2].export_bytes.unwrap())
            .sum();
        let a = allocate(&layers, &Budget::UniformBytes(4)).unwrap();
        let b = allocate(&layers, &Budget::Bytes(uniform)).unwrap();
        assert_eq!(a, b);
        let spent: u64 = layers
            .iter()
            .zip(&a.bits)
            .map(|(l, &bits)| l.options.iter().find(|o| o.bits == bits).unwrap())
            .map(|o| o.export_bytes.unwrap())
            .sum();
        assert!(spent <= uniform);
        // Never worse than the uniform choice it could have made.
        let flat: f64 = layers
            .iter()
            .map(|l| l.sensitivity * l.options[2].error)
            .sum();
        assert!(a.objective <= flat);
    }
    let layers = problem(&mut rng, 2, &[2, 4]);
    let e = allocate(&layers, &Budget::UniformBytes(5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 bits is not a candidate"), "{e}");
}

#[test]
fn budgets_that_nothing_fits_are_refused() {
    let mut rng = Rng::new(3);
    let layers = problem(&mut rng, 3, &[2, 4]);
    let e = allocate(&layers, &Budget::AverageBits(1.5, Overhead::Excluded))
        .unwrap_err()
        .to_string();
    assert!(e.contains("below the smallest candidate (2 bits"), "{e}");
    assert!(allocate(&layers, &Budget::AverageBits(f64::NAN, Overhead::Excluded)).is_err());
    assert!(allocate(&layers, &Budget::Bytes(1)).is_err());
    assert!(allocate(&[], &Budget::Bytes(100)).is_err());
}

#[test]
fn sensitivities_near_the_largest_float_allocate_as_small_ones_do() {
    let mut rng = Rng::new(11);
    let small = problem(&mut rng, 6, &[2, 3, 4, 8]);
    let mut huge = small.clone();
    for l in &mut huge {
        l.sensitivity *= 1e307;
    }
    let budget = Budget::AverageBits(3.5, Overhead::Excluded);
    let (a, b) = (
        allocate(&small, &budget).unwrap(),
        allocate(&huge, &budget).unwrap(),
    );
    assert_eq!(a.bits, b.bits, "the same choice at any scale");
    assert!(
        b.objective > 1e300,
        "reported in natural units: {}",
        b.objective
    );
}

#[test]
fn a_decimal_budget_that_is_reachable_is_reached() {
    // 30 layers of 2 weights at 4 or 5 bits: 4.1 bits is 246 of 60 weights' bits, which
    // `4.1 * 60.0` misses by a rounding (245.99999999999997).
    let layers: Vec<LayerCurve> = (0..30)
        .map(|l| LayerCurve {
            name: format!("l{l}"),
            params: 2,
            sensitivity: 1.0,
            options: [(4, 2.0), (5, 1.0)]
                .map(|(bits, error)| WidthOption {
                    bits,
                    error,
                    overhead_bits: 0,
                    export_bytes: Some(1),
                })
                .to_vec(),
        })
        .collect();
    let a = allocate(&layers, &Budget::AverageBits(4.1, Overhead::Excluded)).unwrap();
    assert_eq!(a.capacity, 246);
    assert!((a.average_bits - 4.1).abs() < 1e-12, "{}", a.average_bits);
    assert_eq!(average_capacity(4.05, 60), 243, "243 exactly");
    assert_eq!(average_capacity(4.01, 60), 240, "240.6 rounds down");
}

#[test]
fn empty_tensors_have_no_negative_error_and_no_export_size() {
    let base = QuantSpec::new(8, QuantType::Symmetric, 1);
    let flat = measure("flat", &[], [0, 8], 1.0, &base, &[2, 4]).unwrap();
    assert!(flat.options.iter().all(|o| o.error.is_sign_positive()));
    let narrow = measure("narrow", &[], [8, 0], 1.0, &base, &[2, 4]).unwrap();
    let e = allocate(&[narrow], &Budget::Bytes(100))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`narrow` has no weights"), "{e}");
}

#[test]
fn more_layers_than_a_schedule_holds_are_refused() {
    let mut rng = Rng::new(2);
    let one = problem(&mut rng, 1, &[2, 4]).remove(0);
    let layers = vec![one; Schedule::MAX_LAYERS + 1];
    let e = allocate(&layers, &Budget::AverageBits(3.0, Overhead::Excluded))
        .unwrap_err()
        .to_string();
    assert!(e.contains("65537 layers: at most 65536"), "{e}");
}

#[test]
fn measured_errors_fall_with_width_and_match_the_quantizer() {
    let mut rng = Rng::new(5);
    let w = rng.normal_vec(64 * 32, 0.02);
    let base = QuantSpec::new(8, QuantType::Asymmetric, 16);
    let curve = measure("w", &w, [64, 32], 2.0, &base, &[8, 3, 4, 3]).unwrap();
    let bits: Vec<u32> = curve.options.iter().map(|o| o.bits).collect();
    assert_eq!(bits, [3, 4, 8]);
    assert!(curve.options.windows(2).all(|p| p[1].error < p[0].error));
    // Groups of 128: a scale and a zero point each.
    assert_eq!(curve.options[0].overhead_bits, 16 * 64);
    // 3 bits: ten codes a word, four words a row of 32, 64 rows; 16 scales, 16 zero points.
    assert_eq!(
        curve.options[0].export_bytes,
        Some(64 * 4 * 4 + 16 * 4 + 16 * 4)
    );
    let mut out = vec![0.0f32; w.len()];
    fake_quantize(
        "w",
        &w,
        &mut out,
        &QuantSpec::new(4, QuantType::Asymmetric, 16),
    )
    .unwrap();
    let e: f64 = w
        .iter()
        .zip(&out)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    assert_eq!(curve.options[1].error, e);
    assert!(measure("w", &w, [64, 32], -1.0, &base, &[4]).is_err());
    assert!(measure("w", &w, [64, 31], 1.0, &base, &[4]).is_err());
}

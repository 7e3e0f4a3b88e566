//! Second-order bit allocation (docs/algorithm.md): each layer's width from its sensitivity
//! under a size budget,
//!
//! ```text
//! minimise  Σ_l s_l · ‖Q_{b_l}(W_l) − W_l‖²_F    subject to    Σ_l cost_l(b_l) ≤ capacity
//! ```
//!
//! solved exactly. It is a multiple-choice knapsack: one width per layer, each with a cost and
//! an error. [`allocate`] runs a dynamic programme over the layers that keeps, after each
//! layer, every Pareto-optimal (total cost, total objective) pair of the layers so far and a
//! back-pointer to the choice that made it. A pair another pair beats on both counts can never
//! be part of an optimum, so nothing optimal is dropped; the frontier never holds more points
//! than there are distinct total costs, so it is never larger than the table of the textbook
//! programme over cost units, and usually far smaller. Past a memory limit the programme splits
//! the layers in halves instead of keeping every back-pointer (`frontier`), still exactly.
//!
//! The cost of a width is what [`Budget`] says: `n·b` code bits per layer, optionally with the
//! bits of its scales and zero points ([`Overhead`]), or the layer's exact export bytes (packed
//! words, scales and zero points) for a budget in bytes.
//!
//! ```
//! use moq_core::allocate::{Budget, Overhead, allocate, measure};
//! use moq_core::{QuantSpec, QuantType};
//!
//! let base = QuantSpec::new(8, QuantType::Symmetric, 4);
//! let flat: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
//! let sensitive = measure("a", &flat, [16, 16], 10.0, &base, &[2, 4, 8]).unwrap();
//! let tolerant = measure("b", &flat, [16, 16], 0.1, &base, &[2, 4, 8]).unwrap();
//! let layers = [sensitive, tolerant];
//! let plan = allocate(&layers, &Budget::AverageBits(5.0, Overhead::Excluded)).unwrap();
//! // The sensitive layer keeps 8 bits, the tolerant one gets 2: 5 bits on average.
//! assert_eq!(plan.bits, [8, 2]);
//! ```

use serde::Serialize;

use crate::config::QuantType;
use crate::error::{MoqError, Result};
use crate::layout::PackedShape;
use crate::pack::ScaleFormat;
use crate::quantizer::{QuantSpec, fake_quantize};
use crate::schedule::Schedule;

mod frontier;

/// The widths tried by default.
pub const DEFAULT_CANDIDATES: [u32; 6] = [2, 3, 4, 5, 6, 8];

/// Whether a budget in average bits counts the scales and zero points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overhead {
    /// Only the codes: `Σ n_l·b_l ≤ B·Σ n_l` (as the width is usually quoted).
    Excluded,
    /// Codes plus 32 bits per group for its f32 scale and, asymmetric, 32 for its zero point.
    Included,
}

/// The size budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Average bits per quantized weight.
    AverageBits(f64, Overhead),
    /// Total bytes of the allocated layers' exports (packed words, f32 scales, zero points).
    Bytes(u64),
    /// The bytes of every layer's export at this one width (`Bytes` of the uniform model: the
    /// same size, spent where the sensitivities say); the width must be a candidate.
    UniformBytes(u32),
}

/// One width of one layer: its squared error and costs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WidthOption {
    /// The width.
    pub bits: u32,
    /// `‖Q_b(W) − W‖²_F`, summed in f64.
    pub error: f64,
    /// Bits of its scales and zero points.
    pub overhead_bits: u64,
    /// Bytes of its export (packed words, scales and zero points); `None` above 8 bits, which
    /// the packed layout does not hold.
    pub export_bytes: Option<u64>,
}

/// A layer to allocate: its size, sensitivity and the error of each candidate width.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerCurve {
    /// The layer's (tensor's) name.
    pub name: String,
    /// Its number of weights `n_l`.
    pub params: usize,
    /// Its sensitivity `s_l ≥ 0` (the top Hessian eigenvalue, as measured).
    pub sensitivity: f64,
    /// One entry per candidate width, ascending.
    pub options: Vec<WidthOption>,
}

/// The widths chosen.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Allocation {
    /// One width per layer, in the order given.
    pub bits: Vec<u32>,
    /// `Σ s_l · error_l(b_l)`.
    pub objective: f64,
    /// The budget's cost of the choice, and the capacity it had (in bits for an average-bits
    /// budget, in bytes for a bytes budget).
    pub cost: u64,
    /// See `cost`.
    pub capacity: u64,
    /// Code bits per weight of the choice: `Σ n_l·b_l / Σ n_l`.
    pub average_bits: f64,
}

fn bad(reason: String) -> MoqError {
    MoqError::Allocation { reason }
}

/// Why `layer` has no export size for `budget`: it is empty, or its widths are beyond 8 bits.
fn no_export(layer: &LayerCurve, budget: &str) -> String {
    match layer.params {
        0 => format!(
            "{budget}: `{}` has no weights, and an empty tensor has no packed export (leave it \
             out, or budget in average bits)",
            layer.name
        ),
        _ => format!(
            "{budget}: no candidate width of `{}` has a packed export (the packed layout holds \
             1 to 8 bits)",
            layer.name
        ),
    }
}

/// The error curve of one layer: `weights` (a `[rows, cols]` tensor, quantized in `base`'s
/// groups and grid with nearest rounding) at each of `candidates`, with sensitivity `s`.
pub fn measure(
    name: &str,
    weights: &[f32],
    shape: [usize; 2],
    sensitivity: f64,
    base: &QuantSpec,
    candidates: &[u32],
) -> Result<LayerCurve> {
    if !(sensitivity.is_finite() && sensitivity >= 0.0) {
        return Err(bad(format!(
            "`{name}`: sensitivity {sensitivity} is not a finite number ≥ 0"
        )));
    }
    if shape[0].checked_mul(shape[1]) != Some(weights.len()) {
        return Err(bad(format!(
            "`{name}`: shape {shape:?} does not hold {} weights",
            weights.len()
        )));
    }
    let mut sorted = candidates.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return Err(bad("no candidate widths".into()));
    }
    let mut out = vec![0.0f32; weights.len()];
    let mut options = Vec::with_capacity(sorted.len());
    for bits in sorted {
        let spec = QuantSpec::new(bits, base.quant_type, base.groups);
        fake_quantize(name, weights, &mut out, &spec)?;
        let error = weights
            .iter()
            .zip(&out)
            .map(|(&w, &q)| (q as f64 - w as f64).powi(2))
            // `sum` of no terms is -0.0 (an empty tensor's error would print as `-0`).
            .fold(0.0, |total, e| total + e);
        let zero_point_bits = if base.quant_type == QuantType::Asymmetric {
            32
        } else {
            0
        };
        let overhead_bits = base.groups as u64 * (32 + zero_point_bits);
        let export_bytes = PackedShape::new(shape, bits, base.quant_type, base.groups)
            .ok()
            .map(|p| {
                (p.words() * 4 + p.scale_bytes(ScaleFormat::F32) + p.zero_points() * 4) as u64
            });
        options.push(WidthOption {
            bits,
            error,
            overhead_bits,
            export_bytes,
        });
    }
    Ok(LayerCurve {
        name: name.to_owned(),
        params: weights.len(),
        sensitivity,
        options,
    })
}

/// The cost of `option` of `layer` under `budget`; `None` when the budget cannot count it.
fn cost(layer: &LayerCurve, option: &WidthOption, budget: &Budget) -> Option<u64> {
    let code_bits = (layer.params as u64).checked_mul(option.bits as u64)?;
    match budget {
        Budget::AverageBits(_, Overhead::Excluded) => Some(code_bits),
        Budget::AverageBits(_, Overhead::Included) => code_bits.checked_add(option.overhead_bits),
        Budget::Bytes(_) | Budget::UniformBytes(_) => option.export_bytes,
    }
}

/// The bits `b` per weight allow `params` weights: `⌊b · params⌋`, where a product within
/// rounding of a whole number is that number (4.1 × 60 is 245.99999999999997 in floating
/// point, and a budget of 4.1 bits must reach 246).
fn average_capacity(b: f64, params: u64) -> u64 {
    let exact = b * params as f64;
    let nearest = exact.round();
    if (exact - nearest).abs() <= 1e-9 * nearest.abs().max(1.0) {
        nearest as u64
    } else {
        exact.floor() as u64
    }
}

/// The export bytes of every layer at `bits`.
fn uniform_bytes(layers: &[LayerCurve], bits: u32) -> Result<u64> {
    layers.iter().try_fold(0u64, |total, l| {
        let option = l.options.iter().find(|o| o.bits == bits).ok_or_else(|| {
            bad(format!(
                "a budget of the uniform {bits}-bit export: {bits} bits is not a candidate width \
                 of `{}`",
                l.name
            ))
        })?;
        let bytes = option.export_bytes.ok_or_else(|| {
            bad(format!(
                "a budget of the uniform {bits}-bit export: the packed layout holds 1 to 16 bits"
            ))
        })?;
        Ok(total.saturating_add(bytes))
    })
}

/// Chooses one width per layer minimising `Σ s_l · error_l(b_l)` within `budget`, exactly
/// (see the module docs). Of equal objectives the cheaper choice wins.
pub fn allocate(layers: &[LayerCurve], budget: &Budget) -> Result<Allocation> {
    allocate_within(layers, budget, MAX_BACK_POINTS)
}

/// The frontier points whose back-pointers [`allocate`] keeps at once (5 bytes each: 80 MiB);
/// a larger programme is split in halves ([`frontier::choose`]), which costs time, not memory.
const MAX_BACK_POINTS: usize = 1 << 24;

/// [`allocate`], keeping at most `back_points` back-pointers at once.
fn allocate_within(
    layers: &[LayerCurve],
    budget: &Budget,
    back_points: usize,
) -> Result<Allocation> {
    check_layers(layers)?;
    let params: u64 = layers.iter().map(|l| l.params as u64).sum();
    let capacity = match *budget {
        Budget::AverageBits(b, _) if !(b.is_finite() && b > 0.0) => {
            return Err(bad(format!(
                "a budget of {b} bits is not a positive number"
            )));
        }
        Budget::AverageBits(b, _) => average_capacity(b, params),
        Budget::Bytes(bytes) => bytes,
        Budget::UniformBytes(bits) => uniform_bytes(layers, bits)?,
    };
    check_cheapest_fits(layers, budget, capacity)?;
    let chosen = frontier::choose(layers, budget, capacity, back_points)
        .ok_or_else(|| bad("no allocation fits the budget".into()))?;
    let bits: Vec<u32> = layers
        .iter()
        .zip(&chosen)
        .map(|(l, &k)| l.options[k].bits)
        .collect();
    let cost_of = |(l, &k): (&LayerCurve, &usize)| cost(l, &l.options[k], budget).unwrap_or(0);
    let total_cost = layers.iter().zip(&chosen).map(cost_of).sum();
    let code_bits: f64 = layers
        .iter()
        .zip(&bits)
        .map(|(l, &b)| l.params as f64 * b as f64)
        .sum();
    Ok(Allocation {
        objective: natural_objective(layers, &bits),
        bits,
        cost: total_cost,
        capacity,
        average_bits: code_bits / params.max(1) as f64,
    })
}

/// The layers' own limits: how many, their candidate widths, sensitivities and errors.
fn check_layers(layers: &[LayerCurve]) -> Result<()> {
    if layers.is_empty() {
        return Err(bad("no layers to allocate".into()));
    }
    if layers.len() > Schedule::MAX_LAYERS {
        return Err(bad(format!(
            "{} layers: at most {} (Schedule::MAX_LAYERS) are allocated",
            layers.len(),
            Schedule::MAX_LAYERS
        )));
    }
    for l in layers {
        if l.options.is_empty() {
            return Err(bad(format!("`{}` has no candidate widths", l.name)));
        }
        if l.options.len() > usize::from(u8::MAX) {
            return Err(bad(format!(
                "`{}` has {} candidate widths: at most 255",
                l.name,
                l.options.len()
            )));
        }
        if !(l.sensitivity.is_finite() && l.sensitivity >= 0.0) {
            return Err(bad(format!(
                "`{}`: sensitivity {} is not a finite number ≥ 0",
                l.name, l.sensitivity
            )));
        }
        if let Some(o) = l
            .options
            .iter()
            .find(|o| !(o.error.is_finite() && o.error >= 0.0))
        {
            return Err(bad(format!(
                "`{}` at {} bits has error {}",
                l.name, o.bits, o.error
            )));
        }
    }
    Ok(())
}

/// The cheapest choice must fit, or nothing does: an error that says by how much.
fn check_cheapest_fits(layers: &[LayerCurve], budget: &Budget, capacity: u64) -> Result<()> {
    let mut cheapest = 0u64;
    for l in layers {
        let c = l
            .options
            .iter()
            .filter_map(|o| cost(l, o, budget))
            .min()
            .ok_or_else(|| bad(no_export(l, "a byte budget")))?;
        cheapest = cheapest.saturating_add(c);
    }
    if cheapest <= capacity {
        return Ok(());
    }
    let smallest = layers
        .iter()
        .flat_map(|l| l.options.iter().map(|o| o.bits))
        .min()
        .unwrap_or(0);
    Err(bad(match budget {
        Budget::AverageBits(b, overhead) => {
            let (with, and) = if *overhead == Overhead::Included {
                (" with scales and zero points", " and its scales")
            } else {
                ("", "")
            };
            format!(
                "a budget of {b} bits per weight{with} is below the smallest candidate \
                 ({smallest} bits{and}): nothing fits"
            )
        }
        Budget::Bytes(_) | Budget::UniformBytes(_) => format!(
            "a budget of {capacity} bytes is below the smallest export ({cheapest} bytes at \
             the narrowest widths)"
        ),
    }))
}

/// `Σ s_l · error_l(b_l)` in natural units (infinite if it overflows there).
fn natural_objective(layers: &[LayerCurve], bits: &[u32]) -> f64 {
    layers
        .iter()
        .zip(bits)
        .map(|(l, &b)| {
            let o = l
                .options
                .iter()
                .find(|o| o.bits == b)
                .map_or(0.0, |o| o.error);
            l.sensitivity * o
        })
        .fold(0.0, |total, x| total + x)
}

#[cfg(test)]
mod tests {
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
                            cost(l, l.options.iter().find(|o| o.bits == b).unwrap(), &budget)
                                .unwrap()
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
}

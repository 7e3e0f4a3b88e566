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
//! let allocation = allocate(&layers, &Budget::AverageBits(5.0, Overhead::Excluded)).unwrap();
//! // The sensitive layer keeps 8 bits, the tolerant one gets 2: 5 bits on average.
//! assert_eq!(allocation.bits, [8, 2]);
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
mod tests;

//! The per-element algorithm, the leaf of the quantizer's modules: one group's grid
//! ([`Grid`]), its statistics pass ([`min_max`]), its code function ([`apply_grid`]) and the
//! sinks that write its results (values, values in place, codes). the crate's `simd/quantize.rs`
//! compiles these hot loops per instruction set; `grid` finds each group's grid with them.

use super::element::Element;
use crate::config::Rounding;
use crate::noise::NoiseKeys;

/// One group's grid. `code` and `value` are the whole per-element algorithm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Grid {
    /// `q = clamp(round(x·inv + r) + zero, lo, hi)`, value `(q − zero)·scale`.
    Linear {
        scale: f32,
        inv: f32,
        zero: f32,
        lo: f32,
        hi: f32,
    },
    /// `q = 1 if x > Δ, −1 if x < −Δ, else 0`, value `q·α`.
    Ternary { alpha: f32, threshold: f32 },
    /// `q = 1 if x ≥ 0 else −1`, value `q·α`.
    Binary { alpha: f32 },
}

impl Grid {
    pub(crate) fn scale(&self) -> f32 {
        match *self {
            Grid::Linear { scale, .. } => scale,
            Grid::Ternary { alpha, .. } | Grid::Binary { alpha } => alpha,
        }
    }

    pub(crate) fn zero(&self) -> f32 {
        match *self {
            Grid::Linear { zero, .. } => zero,
            _ => 0.0,
        }
    }
}

/// Min and max, and whether every element is finite, in one vectorisable pass (inlined into
/// each of `dispatch`'s instruction-set wrappers).
#[inline(always)]
pub(crate) fn min_max<T: Element>(xs: &[T]) -> (f32, f32, bool) {
    const LANES: usize = 16;
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    // x·0 is ±0 for finite x and NaN otherwise; NaN sticks in the sum.
    let mut check = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            let x = c[j].to_f32();
            lo[j] = if x < lo[j] { x } else { lo[j] };
            hi[j] = if x > hi[j] { x } else { hi[j] };
            check[j] += x * 0.0;
        }
    }
    for (j, x) in rest.iter().enumerate() {
        let x = x.to_f32();
        lo[j] = if x < lo[j] { x } else { lo[j] };
        hi[j] = if x > hi[j] { x } else { hi[j] };
        check[j] += x * 0.0;
    }
    let lo = lo
        .iter()
        .fold(f32::INFINITY, |a, &b| if b < a { b } else { a });
    let hi = hi
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    (lo, hi, check.iter().all(|c| !c.is_nan()))
}

/// Rounds to nearest, ties to even, with plain adds (so loops vectorise without SSE4.1).
#[inline(always)]
pub(crate) fn round_even(y: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let a = y.abs();
    let r = (a + TWO_23) - TWO_23;
    if a < TWO_23 { r.copysign(y) } else { y }
}

#[inline(always)]
pub(crate) fn clamp(q: f32, lo: f32, hi: f32) -> f32 {
    let q = if q < lo { lo } else { q };
    if q > hi { hi } else { q }
}

/// Receives the per-element code function of one group and applies it to a run of elements.
/// Each implementor is one way of writing results (values, values in place, codes); the code
/// function is a generic closure, so every combination compiles to its own vectorisable loop.
pub(crate) trait Sink {
    fn run(self, code: impl Fn(usize, f32) -> f32, zero: f32, scale: f32);
}

/// Hands `sink` the group's code function: the whole per-element algorithm is here, and the
/// value of a code is always `(q − zero)·scale`.
#[inline(always)]
pub(crate) fn apply_grid(grid: Grid, rounding: Rounding, keys: NoiseKeys, sink: impl Sink) {
    match (grid, rounding) {
        (
            Grid::Linear {
                scale,
                inv,
                zero,
                lo,
                hi,
            },
            Rounding::Nearest,
        ) => sink.run(
            move |_, x| clamp(round_even(x * inv) + zero, lo, hi),
            zero,
            scale,
        ),
        (
            Grid::Linear {
                scale,
                inv,
                zero,
                lo,
                hi,
            },
            Rounding::Stochastic,
        ) => sink.run(
            move |i, x| clamp(round_even(x * inv + keys.offset(i as u64)) + zero, lo, hi),
            zero,
            scale,
        ),
        (Grid::Ternary { alpha, threshold }, _) => sink.run(
            move |_, x| {
                if x > threshold {
                    1.0
                } else if x < -threshold {
                    -1.0
                } else {
                    0.0
                }
            },
            0.0,
            alpha,
        ),
        (Grid::Binary { alpha }, _) => {
            sink.run(|_, x| if x >= 0.0 { 1.0 } else { -1.0 }, 0.0, alpha)
        }
    }
}

/// Writes `ρ·x + (1−ρ)·value` (plain values when `ρ = 0`) of `src` into `dst`.
pub(crate) struct Values<'a, T> {
    pub(crate) start: usize,
    pub(crate) src: &'a [T],
    pub(crate) dst: &'a mut [T],
    pub(crate) mix: f32,
}

impl<T: Element> Sink for Values<'_, T> {
    #[inline(always)]
    fn run(self, code: impl Fn(usize, f32) -> f32, zero: f32, scale: f32) {
        let pairs = self.src.iter().zip(self.dst.iter_mut()).enumerate();
        if self.mix == 0.0 {
            for (k, (x, o)) in pairs {
                *o = T::from_f32((code(self.start + k, x.to_f32()) - zero) * scale);
            }
        } else {
            let mix = self.mix;
            for (k, (x, o)) in pairs {
                let x = x.to_f32();
                let v = (code(self.start + k, x) - zero) * scale;
                *o = T::from_f32(mix * x + (1.0 - mix) * v);
            }
        }
    }
}

/// Replaces each element of `data` with its value.
pub(crate) struct InPlace<'a, T> {
    pub(crate) start: usize,
    pub(crate) data: &'a mut [T],
}

impl<T: Element> Sink for InPlace<'_, T> {
    #[inline(always)]
    fn run(self, code: impl Fn(usize, f32) -> f32, zero: f32, scale: f32) {
        for (k, x) in self.data.iter_mut().enumerate() {
            *x = T::from_f32((code(self.start + k, x.to_f32()) - zero) * scale);
        }
    }
}

/// Writes the integer codes of `src` into `dst`.
pub(crate) struct Codes<'a, T> {
    pub(crate) start: usize,
    pub(crate) src: &'a [T],
    pub(crate) dst: &'a mut [i32],
}

impl<T: Element> Sink for Codes<'_, T> {
    #[inline(always)]
    fn run(self, code: impl Fn(usize, f32) -> f32, _zero: f32, _scale: f32) {
        for (k, (x, o)) in self.src.iter().zip(self.dst.iter_mut()).enumerate() {
            *o = code(self.start + k, x.to_f32()) as i32;
        }
    }
}

//! The per-element algorithm: a group's code function ([`apply_grid`]) and the sinks that
//! write its results (values, values in place, codes).

use super::Element;
use super::grid::Grid;
use crate::config::Rounding;
use crate::noise::NoiseKeys;

/// Rounds to nearest, ties to even, with plain adds (so loops vectorise without SSE4.1).
#[inline(always)]
pub(super) fn round_even(y: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let a = y.abs();
    let r = (a + TWO_23) - TWO_23;
    if a < TWO_23 { r.copysign(y) } else { y }
}

#[inline(always)]
pub(super) fn clamp(q: f32, lo: f32, hi: f32) -> f32 {
    let q = if q < lo { lo } else { q };
    if q > hi { hi } else { q }
}

/// Receives the per-element code function of one group and applies it to a run of elements.
/// Each implementor is one way of writing results (values, values in place, codes); the code
/// function is a generic closure, so every combination compiles to its own vectorisable loop.
pub(super) trait Sink {
    fn run(self, code: impl Fn(usize, f32) -> f32, zero: f32, scale: f32);
}

/// Hands `sink` the group's code function: the whole per-element algorithm is here, and the
/// value of a code is always `(q − zero)·scale`.
#[inline(always)]
pub(super) fn apply_grid(grid: Grid, rounding: Rounding, keys: NoiseKeys, sink: impl Sink) {
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
pub(super) struct Values<'a, T> {
    pub(super) start: usize,
    pub(super) src: &'a [T],
    pub(super) dst: &'a mut [T],
    pub(super) mix: f32,
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
pub(super) struct InPlace<'a, T> {
    pub(super) start: usize,
    pub(super) data: &'a mut [T],
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
pub(super) struct Codes<'a, T> {
    pub(super) start: usize,
    pub(super) src: &'a [T],
    pub(super) dst: &'a mut [i32],
}

impl<T: Element> Sink for Codes<'_, T> {
    #[inline(always)]
    fn run(self, code: impl Fn(usize, f32) -> f32, _zero: f32, _scale: f32) {
        for (k, (x, o)) in self.src.iter().zip(self.dst.iter_mut()).enumerate() {
            *o = code(self.start + k, x.to_f32()) as i32;
        }
    }
}

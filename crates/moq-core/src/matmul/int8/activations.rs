//! One row of `x` quantized for the integer-dot kernel.
//!
//! The weight's scales run along its rows (a group is `group_len` consecutive elements of the
//! row-major `[k, n]` weight), so a column's scale changes with `k` and cannot be taken out of a
//! sum over `k`. It is folded into the activation instead: for each *lane* `a` (the groups' place
//! along a row: one lane per group of a row, or one lane when a group holds whole rows),
//! `x'_k = x_k · s_g(k, a)` is quantized to int8 per block of [`BLOCK`] rows with scale
//! `t = max |x'| / 127`. A tile of lane `a` then sums `q_k · c_k` in integers, block by block.
//! What the integers leave out is one number per lane, [`Quantized::offset`]: the zero points'
//! `−Σ x'_k z_g` and, for nibble codes (stored `c + 8`), `−8 Σ t · q_k`.

use rayon::prelude::*;

use super::TiledWeight;
use super::job::{BLOCK, Lane, Storage};
use crate::simd::{self, Isa};

/// Below this many values (lanes × rows) a row is quantized on the calling thread.
const PAR_MIN_VALUES: usize = 1 << 15;

/// One row of `x`, quantized for every lane of a weight.
pub(crate) struct Quantized {
    /// `[lanes][k_pad]`.
    q: Vec<i8>,
    /// `[lanes][k_pad / BLOCK]`.
    t: Vec<f32>,
    /// Added to every output column of a lane.
    offset: Vec<f32>,
    k_pad: usize,
}

impl Quantized {
    /// Quantizes `x` (one row, `k` values) for `w`'s lanes on `isa` (lanes in parallel when
    /// there are many values).
    pub(crate) fn new(isa: Isa, x: &[f32], w: &TiledWeight) -> Self {
        let (k, k_pad, lanes) = (x.len(), w.k_pad, w.lanes);
        let blocks = k_pad / BLOCK;
        let mut q = vec![0i8; lanes * k_pad];
        let mut t = vec![0.0f32; lanes * blocks];
        let one = |(a, (q, t)): (usize, (&mut [i8], &mut [f32]))| {
            let input = LaneInput {
                x,
                scales: &w.scales[a * k..(a + 1) * k],
                zeros: w.zero_points.get(a * k..(a + 1) * k).unwrap_or(&[]),
                nibbles: w.storage == Storage::Nibbles,
            };
            simd::activations::lane(isa, &input, q, t)
        };
        let offset: Vec<f32> = if lanes * k_pad >= PAR_MIN_VALUES && lanes > 1 {
            let lanes = q.par_chunks_mut(k_pad).zip(t.par_chunks_mut(blocks));
            lanes.enumerate().map(one).collect()
        } else {
            let lanes = q.chunks_mut(k_pad).zip(t.chunks_mut(blocks));
            lanes.enumerate().map(one).collect()
        };
        Self {
            q,
            t,
            offset,
            k_pad,
        }
    }

    /// Lane `a`'s activations.
    pub(crate) fn lane(&self, a: usize) -> Lane<'_> {
        let blocks = self.k_pad / BLOCK;
        Lane {
            q: &self.q[a * self.k_pad..(a + 1) * self.k_pad],
            t: &self.t[a * blocks..(a + 1) * blocks],
        }
    }

    /// What lane `a`'s columns add to their integer sums.
    pub(crate) fn offset(&self, a: usize) -> f32 {
        self.offset[a]
    }
}

/// What one lane's quantization reads: the row of `x`, the lane's scales (and zero points)
/// down `k`, and whether the codes are nibbles (`c + 8`).
pub(crate) struct LaneInput<'a> {
    pub x: &'a [f32],
    pub scales: &'a [f32],
    pub zeros: &'a [f32],
    pub nibbles: bool,
}

/// Writes one lane's int8 activations `q` (`k_pad`) and block scales `t`, and returns what the
/// lane's columns add to their integer sums (NaN when an input is not finite). Inlined into
/// each instruction set's wrapper (`simd/activations.rs`).
#[inline(always)]
pub(crate) fn quantize_lane(input: &LaneInput, q: &mut [i8], t: &mut [f32]) -> f32 {
    let k = input.x.len();
    let mut offset = 0.0f32;
    for (b, (q, t)) in q.chunks_exact_mut(BLOCK).zip(t).enumerate() {
        let rows = b * BLOCK..k.min((b + 1) * BLOCK);
        let block = Block::scale(&input.x[rows.clone()], &input.scales[rows.clone()]);
        if !input.zeros.is_empty() {
            offset -= dot(&block.values, &input.zeros[rows]);
        }
        let sum = block.quantize(q, t);
        if input.nibbles {
            offset -= 8.0 * sum as f32 * *t;
        }
        if !block.finite {
            // A NaN or infinite input makes the outputs NaN, as in f32.
            offset = f32::NAN;
        }
    }
    offset
}

/// One block of `x'` (`x · s`), zero past the row's end.
struct Block {
    values: [f32; BLOCK],
    finite: bool,
}

impl Block {
    /// `x_k · s_k` for the block's rows (at most [`BLOCK`]).
    #[inline(always)]
    fn scale(x: &[f32], scales: &[f32]) -> Self {
        let mut values = [0.0f32; BLOCK];
        for ((v, &x), &s) in values.iter_mut().zip(x).zip(scales) {
            *v = x * s;
        }
        // Lane-wise (a sum or a fold would be one serial chain of 32 adds).
        let finite = values.iter().fold(true, |ok, v| ok & v.is_finite());
        Self { values, finite }
    }

    /// Writes `q = round(v / t)` with `t = max |v| / 127` (0 for a block of zeros) and
    /// returns `Σ q`. Rounds half to even by adding 1.5 · 2²³, which leaves the rounded value
    /// in the low bits of the sum (exact below 2²², so for every |v / t| ≤ 127): plain float
    /// and integer operations, which vectorise where `round` and float-to-int casts do not.
    #[inline(always)]
    fn quantize(&self, q: &mut [i8], t: &mut f32) -> i32 {
        const MAGIC: f32 = 12_582_912.0;
        const LANES: usize = 8;
        // Eight running maxima (one vector), then one: `a > m` is `vmaxps`.
        let mut most = [0.0f32; LANES];
        for c in self.values.chunks_exact(LANES) {
            for (m, v) in most.iter_mut().zip(c) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let max = most.iter().fold(0.0f32, |m, &a| if a > m { a } else { m });
        *t = max / 127.0;
        let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in q.iter_mut().zip(&self.values) {
            let r = (v * inv + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32;
            *q = r as i8;
            sum += *q as i32;
        }
        sum
    }
}

/// `Σ a_i · b_i`.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

//! The `#[cube]` kernels: statistics per piece of a group, their merge, the grid of each group,
//! and the element passes (fake quantization, packed codes).

use cubecl::prelude::*;

use super::scale::{
    inverse_or_zero, is_non_finite, noise_offset, range_scale, stable_scale, zero_of,
};
use super::*;

/// Statistics of `[start, end)` of every group piece: one cube per piece.
#[cube(launch_unchecked)]
pub(crate) fn stats_kernel<F: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    grids: &Array<f32>,
    partials: &mut Array<f32>,
    group_len: u32,
    pieces: u32,
    total: u32,
    #[comptime] past_threshold: bool,
    #[comptime] width: u32,
) {
    let piece = u32::cast_from(CUBE_POS);
    if piece >= total {
        terminate!();
    }
    let group = piece / pieces;
    let start = group * group_len + (piece % pieces) * comptime!(SPAN as u32);
    let end = u32::min(start + comptime!(SPAN as u32), (group + 1) * group_len);
    let threshold = if past_threshold {
        grids[group as usize * GRID + THRESHOLD]
    } else {
        f32::new(-1.0)
    };
    let mut lo = f32::new(f32::MAX);
    let mut hi = f32::new(f32::MIN);
    let mut sum = 0.0f32;
    let mut count = 0.0f32;
    let mut bad = 0.0f32;
    // Vectors of `width` values (a group holds whole vectors).
    let mut i = start / width + UNIT_POS;
    while i < end / width {
        let values = x[i as usize];
        #[unroll]
        for j in 0..width {
            let v = f32::cast_from(values[j as usize]);
            if is_non_finite(v) {
                bad += 1.0;
            } else {
                lo = f32::min(lo, v);
                hi = f32::max(hi, v);
                let a = f32::abs(v);
                if a > threshold {
                    sum += a;
                    count += 1.0;
                }
            }
        }
        i += UNITS;
    }
    write_partial(lo, hi, sum, count, bad, partials, piece);
}

/// Adds the cube's partial statistics in shared memory (a tree, in a fixed order) and writes
/// them as partial `piece`.
#[cube]
pub(crate) fn write_partial(
    lo: f32,
    hi: f32,
    sum: f32,
    count: f32,
    bad: f32,
    partials: &mut Array<f32>,
    piece: u32,
) {
    let mut s_lo = SharedMemory::<f32>::new(UNITS as usize);
    let mut s_hi = SharedMemory::<f32>::new(UNITS as usize);
    let mut s_sum = SharedMemory::<f32>::new(UNITS as usize);
    let mut s_count = SharedMemory::<f32>::new(UNITS as usize);
    let mut s_bad = SharedMemory::<f32>::new(UNITS as usize);
    let u = UNIT_POS as usize;
    s_lo[u] = lo;
    s_hi[u] = hi;
    s_sum[u] = sum;
    s_count[u] = count;
    s_bad[u] = bad;
    sync_cube();
    #[unroll]
    for level in 0..8u32 {
        let stride = comptime!((UNITS >> (level + 1)) as usize);
        if u < stride {
            s_lo[u] = f32::min(s_lo[u], s_lo[u + stride]);
            s_hi[u] = f32::max(s_hi[u], s_hi[u + stride]);
            s_sum[u] += s_sum[u + stride];
            s_count[u] += s_count[u + stride];
            s_bad[u] += s_bad[u + stride];
        }
        sync_cube();
    }
    if u == 0 {
        let p = (piece * comptime!(PARTIAL as u32)) as usize;
        partials[p + P_MIN] = s_lo[0];
        partials[p + P_MAX] = s_hi[0];
        partials[p + P_SUM] = s_sum[0];
        partials[p + P_COUNT] = s_count[0];
        partials[p + P_BAD] = s_bad[0];
    }
}

/// Merges up to [`UNITS`] consecutive partials of a group into one: one cube per output
/// partial. Repeated until each group has one partial, so no unit merges more than 256.
#[cube(launch_unchecked)]
pub(crate) fn merge_kernel(
    input: &Array<f32>,
    output: &mut Array<f32>,
    pieces_in: u32,
    pieces_out: u32,
    total_out: u32,
) {
    let piece = u32::cast_from(CUBE_POS);
    if piece >= total_out {
        terminate!();
    }
    let group = piece / pieces_out;
    let p = (piece % pieces_out) * UNITS + UNIT_POS;
    let mut lo = f32::new(f32::MAX);
    let mut hi = f32::new(f32::MIN);
    let mut sum = f32::new(0.0);
    let mut count = f32::new(0.0);
    let mut bad = f32::new(0.0);
    if p < pieces_in {
        let at = ((group * pieces_in + p) * comptime!(PARTIAL as u32)) as usize;
        lo = input[at + P_MIN];
        hi = input[at + P_MAX];
        sum = input[at + P_SUM];
        count = input[at + P_COUNT];
        bad = input[at + P_BAD];
    }
    write_partial(lo, hi, sum, count, bad, output, piece);
}

/// One unit per group: reads the group's statistics and writes its grid.
#[cube(launch_unchecked)]
pub(crate) fn grid_kernel(
    partials: &Array<f32>,
    grids: &mut Array<f32>,
    bad: &mut Array<Atomic<u32>>,
    groups: u32,
    group_len: u32,
    #[comptime] step: GridStep,
    #[comptime] bits: u32,
    #[comptime] symmetric: bool,
) {
    let group = u32::cast_from(ABSOLUTE_POS);
    if group >= groups {
        terminate!();
    }
    // One partial per group (the merge passes ran).
    let at = (group * comptime!(PARTIAL as u32)) as usize;
    let lo = partials[at + P_MIN];
    let hi = partials[at + P_MAX];
    let sum = partials[at + P_SUM];
    let count = partials[at + P_COUNT];
    let non_finite = partials[at + P_BAD];
    if non_finite > 0.0 {
        bad[0].fetch_add(1u32);
    }
    let g = group as usize * GRID;
    match step {
        GridStep::Binary => {
            grids[g + SCALE] = sum / f32::cast_from(group_len);
            grids[g + ZERO] = 0.0;
        }
        GridStep::TernaryThreshold => {
            grids[g + THRESHOLD] = 0.7 * sum / f32::cast_from(group_len);
            grids[g + ZERO] = 0.0;
        }
        GridStep::TernaryAlpha => {
            grids[g + SCALE] = if count == 0.0 {
                f32::new(0.0)
            } else {
                sum / count
            };
        }
        GridStep::Linear => {
            if comptime!(symmetric) {
                let qmax = comptime!(((1u32 << (bits - 1)) - 1) as f32);
                let m = f32::max(f32::abs(lo), f32::abs(hi));
                let scale = if lo == hi {
                    m
                } else {
                    stable_scale(m / qmax, lo, hi, qmax, true)
                };
                grids[g + SCALE] = scale;
                grids[g + INV_SCALE] = inverse_or_zero(scale);
                grids[g + ZERO] = 0.0;
                grids[g + LO] = -qmax;
                grids[g + HI] = qmax;
            } else {
                let n = comptime!(((1u64 << bits) - 1) as f32);
                let mut scale = f32::abs(lo);
                let mut zero = if lo < 0.0 {
                    f32::new(1.0)
                } else {
                    f32::new(0.0)
                };
                if lo != hi {
                    scale = stable_scale(range_scale(lo, hi, n), lo, hi, n, false);
                    zero = zero_of(scale, lo);
                }
                grids[g + SCALE] = scale;
                grids[g + INV_SCALE] = inverse_or_zero(scale);
                grids[g + ZERO] = zero;
                grids[g + LO] = 0.0;
                grids[g + HI] = n;
            }
        }
    }
}

/// The code of `v` on a group's grid (an integer in f32), before any storage offset; `g` is
/// the start of the group's grid record.
#[cube]
pub(crate) fn code_of(
    v: f32,
    grids: &Array<f32>,
    g: usize,
    offset: f32,
    #[comptime] kind: GridKind,
) -> f32 {
    match kind {
        GridKind::Linear => f32::clamp(
            f32::round(v * grids[g + INV_SCALE] + offset) + grids[g + ZERO],
            grids[g + LO],
            grids[g + HI],
        ),
        GridKind::Ternary => {
            let t = grids[g + THRESHOLD];
            if v > t {
                f32::new(1.0)
            } else if v < -t {
                f32::new(-1.0)
            } else {
                f32::new(0.0)
            }
        }
        GridKind::Binary => {
            if v >= 0.0 {
                f32::new(1.0)
            } else {
                f32::new(-1.0)
            }
        }
    }
}

/// The unit's index in a launch of [`cube_count`] (one-dimensional cubes, spread over the
/// device's cube-count limits).
#[cube]
pub(crate) fn unit_index() -> u32 {
    u32::cast_from(ABSOLUTE_POS)
}

/// The rounding offset of element `i`: from the generator when stochastic, else 0.
#[cube]
pub(crate) fn rounding_offset(i: u32, k0: u32, k1: u32, #[comptime] stochastic: bool) -> f32 {
    if stochastic {
        noise_offset(i, k0, k1)
    } else {
        f32::new(0.0)
    }
}

/// One unit per vector of `width` elements (all in one group): `ρ·x + (1−ρ)·Q(x)` (`Q(x)`
/// when not mixing).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn fake_quantize_kernel<F: Float, N: Size>(
    x: &Array<Vector<F, N>>,
    grids: &Array<f32>,
    out: &mut Array<Vector<F, N>>,
    vectors: u32,
    group_len: u32,
    k0: u32,
    k1: u32,
    mix: f32,
    #[comptime] kind: GridKind,
    #[comptime] stochastic: bool,
    #[comptime] mixing: bool,
    #[comptime] width: u32,
) {
    let vi = unit_index();
    if vi >= vectors {
        terminate!();
    }
    let first = vi * width;
    let g = (first / group_len) as usize * GRID;
    let (scale, zero) = (grids[g + SCALE], grids[g + ZERO]);
    let values = x[vi as usize];
    let mut result = Vector::<F, N>::empty();
    #[unroll]
    for j in 0..width {
        let v = f32::cast_from(values[j as usize]);
        let q = code_of(
            v,
            grids,
            g,
            rounding_offset(first + j, k0, k1, stochastic),
            kind,
        );
        let value = (q - zero) * scale;
        result[j as usize] = if mixing {
            F::cast_from(mix * v + (1.0 - mix) * value)
        } else {
            F::cast_from(value)
        };
    }
    out[vi as usize] = result;
}

/// One unit per packed word: the codes of `per_word` consecutive elements of a row.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_kernel<F: Float>(
    x: &Array<F>,
    grids: &Array<f32>,
    words: &mut Array<u32>,
    total_words: u32,
    row_len: u32,
    words_per_row: u32,
    group_len: u32,
    k0: u32,
    k1: u32,
    #[comptime] bits: u32,
    #[comptime] kind: GridKind,
    #[comptime] stochastic: bool,
    #[comptime] asymmetric: bool,
) {
    let w = unit_index();
    if w >= total_words {
        terminate!();
    }
    let per_word = comptime!(32 / bits);
    let row = w / words_per_row;
    let first = (w % words_per_row) * per_word;
    let mask = comptime!(if bits == 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    });
    let mut word = 0u32;
    #[unroll]
    for j in 0..per_word {
        let col = first + j;
        if col < row_len {
            let i = row * row_len + col;
            let v = f32::cast_from(x[i as usize]);
            let g = (i / group_len) as usize * GRID;
            let q = code_of(v, grids, g, rounding_offset(i, k0, k1, stochastic), kind);
            let field = if comptime!(kind == GridKind::Binary) {
                if q > 0.0 { u32::new(1) } else { u32::new(0) }
            } else {
                let stored = if asymmetric {
                    i32::cast_from(q) - comptime!(1i32 << (bits - 1))
                } else {
                    i32::cast_from(q)
                };
                u32::cast_from(stored) & mask
            };
            word |= field << (j * bits);
        }
    }
    words[w as usize] = word;
}

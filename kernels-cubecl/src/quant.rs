//! Group-wise quantization on the device: fused fake quantization ([`fake_quantize`]), codes
//! ([`crate::quantize()`], packed as `moq-core`'s `Packed32` layout) and the grids behind both.
//!
//! Every operation is the same three steps (DESIGN.md section 3, "Quantizer"):
//! 1. **statistics**: one cube per piece of a group (at most [`SPAN`] elements) reduces min,
//!    max, Σ|x| (or Σ|x| past the ternary threshold), a count and a non-finite count into a
//!    partial;
//! 2. **grid**: cubes merge each group's partials 256 at a time (a tree, so a large group costs
//!    a few short passes, not one long serial one), then one unit per group computes the
//!    group's grid (`scale, 1/scale, zero, lo, hi`) exactly as `moq-core` does, including its
//!    search for a scale that requantizes exactly; ternary grids take a second statistics pass;
//! 3. **apply**: one unit per element (or per packed word) computes the code, with the
//!    stochastic offset from `moq-core`'s counter-based generator, and writes the value
//!    (mixed with the input when asked) or the packed code.
//!
//! The only read back to the host is one `u32`, the non-finite count, so that a NaN becomes an
//! error naming the tensor instead of a silently broken model.
//!
//! Results equal the reference except in the last bits of some scales: GPU division is not
//! always correctly rounded (WGSL allows 2.5 ulp), the reference sums |x| in f64 for 1- and
//! 2-bit grids, and it divides the asymmetric range in f64, which the kernel reproduces with
//! a TwoSum error term and an `fma` correction: exact where `fma` is fused and the compiler keeps
//! the order of operations (CUDA), but not on lavapipe, where both the TwoSum term and `fma`
//! differ from the CPU's in about half the cases (measured). A value can then differ by a few
//! ulps, and an element sitting exactly on a rounding tie can land one grid step away. The
//! tests bound both. Symmetric grids (nearest, stochastic, mixed) match the reference bit for
//! bit, which the kernel tests assert (on lavapipe in CI).

use cubecl::prelude::*;
use cubecl::server::Handle;
use moq_core::{PackedShape, QuantSpec, QuantType, Rounding};

use crate::error::{KernelError, Result};

/// Units per cube in the statistics pass.
const UNITS: u32 = 256;
/// Units per cube in element-wise kernels.
pub(crate) const UNITS_ELEMENTWISE: u32 = 256;
/// Elements one cube reduces in the statistics pass.
pub const SPAN: usize = 4096;
/// Floats per partial (statistics of a piece of a group); the fields are at the offsets below.
const PARTIAL: usize = 5;
/// Partial field: the smallest finite value.
const P_MIN: usize = 0;
/// Partial field: the largest finite value.
const P_MAX: usize = 1;
/// Partial field: Σ|x| (past the ternary threshold on the second ternary pass).
const P_SUM: usize = 2;
/// Partial field: how many values the sum holds.
const P_COUNT: usize = 3;
/// Partial field: how many values are NaN or infinite.
const P_BAD: usize = 4;
/// Floats per grid record, one record per group; the fields are at the offsets below.
pub(crate) const GRID: usize = 5;
/// Grid field: the scale (α for 1- and 2-bit grids).
pub(crate) const SCALE: usize = 0;
/// Grid field: 1/scale for linear grids…
pub(crate) const INV_SCALE: usize = 1;
/// …which holds the threshold `Δ` for ternary grids.
pub(crate) const THRESHOLD: usize = 1;
/// Grid field: the zero point `z` (0 for symmetric, ternary and binary grids).
pub(crate) const ZERO: usize = 2;
/// Grid field: the smallest code.
pub(crate) const LO: usize = 3;
/// Grid field: the largest code.
pub(crate) const HI: usize = 4;

/// The kind of grid a width gets: a comptime parameter of the apply kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GridKind {
    /// Symmetric or asymmetric, 3 bits and more.
    Linear,
    /// 2 bits: `+α`, 0, `−α`.
    Ternary,
    /// 1 bit: `±α`.
    Binary,
}

impl GridKind {
    fn of(bits: u32) -> Self {
        match bits {
            1 => GridKind::Binary,
            2 => GridKind::Ternary,
            _ => GridKind::Linear,
        }
    }
}

/// What one launch of the grid kernel computes from a statistics pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum GridStep {
    /// Scale, zero and code range of a linear grid, from min and max.
    Linear,
    /// α = mean |x|.
    Binary,
    /// Δ = 0.7 · mean |x| (then a second statistics pass sums |x| past it).
    TernaryThreshold,
    /// α = mean of |x| past Δ.
    TernaryAlpha,
}

/// `lowbias32`, as `moq_core::noise::mix32`.
#[cube]
pub(crate) fn mix32(x: u32) -> u32 {
    let mut x = x;
    x ^= x >> 16u32;
    x *= 0x7feb_352du32;
    x ^= x >> 15u32;
    x *= 0x846c_a68bu32;
    x ^= x >> 16u32;
    x
}

/// The stochastic rounding offset of element `i` (< 2^32), as `NoiseKeys::offset`.
#[cube]
fn noise_offset(i: u32, k0: u32, k1: u32) -> f32 {
    let h = mix32(mix32(i ^ k0) ^ k1);
    (f32::cast_from(h >> 8) + 0.5) * (1.0 / 16_777_216.0) - 0.5
}

#[cube]
fn is_non_finite(x: f32) -> bool {
    (u32::reinterpret(x) & 0x7f80_0000) == 0x7f80_0000
}

#[cube]
fn next_float(s: f32, up: bool) -> f32 {
    let bits = u32::reinterpret(s);
    if up {
        f32::reinterpret(bits + 1)
    } else {
        f32::reinterpret(bits - 1)
    }
}

#[cube]
fn inverse_or_zero(s: f32) -> f32 {
    if s == 0.0 { f32::new(0.0) } else { 1.0 / s }
}

/// Whether a symmetric scale reproduces itself (`moq-core`'s `linear_grid`).
#[cube]
fn symmetric_ok(s: f32, m: f32, qmax: f32) -> bool {
    (qmax * s) / qmax == s && f32::round(m * inverse_or_zero(s)) >= qmax
}

#[cube]
fn zero_of(s: f32, min: f32) -> f32 {
    if s == 0.0 {
        f32::new(0.0)
    } else {
        f32::clamp(f32::round(-min / s), -1_073_741_824.0, 1_073_741_824.0)
    }
}

/// `(max − min) / n` rounded once, as the reference computes it in f64: the difference's
/// rounding error (TwoSum) and the quotient's remainder (fma) correct the f32 quotient.
#[cube]
fn range_scale(min: f32, max: f32, n: f32) -> f32 {
    let d = max - min;
    let bb = d - max;
    let e = (max - (d - bb)) + (-min - bb);
    let q = d / n;
    let r = fma(-q, n, d) + e;
    q + r / n
}

/// Whether an asymmetric scale reproduces itself (`moq-core`'s `linear_grid`).
#[cube]
fn asymmetric_ok(s: f32, min: f32, max: f32, n: f32) -> bool {
    let z = zero_of(s, min);
    let inv = inverse_or_zero(s);
    let lo = (0.0 - z) * s;
    let hi = (n - z) * s;
    f32::round(min * inv) + z <= 0.0
        && f32::round(max * inv) + z >= n
        && range_scale(lo, hi, n) == s
        && zero_of(s, min) == f32::round(-lo / s)
}

/// `moq-core`'s `stable_scale`: the scale nearest `s0` (within 64 ulps each way) that
/// reproduces itself, `s0` if none does.
#[cube]
fn stable_scale(s0: f32, min: f32, max: f32, n: f32, #[comptime] symmetric: bool) -> f32 {
    let m = f32::max(f32::abs(min), f32::abs(max));
    let mut found = s0;
    let mut done = if symmetric {
        symmetric_ok(s0, m, n)
    } else {
        asymmetric_ok(s0, min, max, n)
    };
    let mut up = s0;
    let mut down = s0;
    for _ in 0..64u32 {
        if !done {
            up = next_float(up, true);
            let up_ok = if symmetric {
                symmetric_ok(up, m, n)
            } else {
                asymmetric_ok(up, min, max, n)
            };
            if up_ok {
                found = up;
                done = true;
            } else {
                down = next_float(down, false);
                let down_ok = if symmetric {
                    symmetric_ok(down, m, n)
                } else {
                    asymmetric_ok(down, min, max, n)
                };
                if down > 0.0 && down_ok {
                    found = down;
                    done = true;
                }
            }
        }
    }
    found
}

/// Statistics of `[start, end)` of every group piece: one cube per piece.
#[cube(launch_unchecked)]
fn stats_kernel<F: Float, N: Size>(
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
fn write_partial(
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
fn merge_kernel(
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
fn grid_kernel(
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
fn rounding_offset(i: u32, k0: u32, k1: u32, #[comptime] stochastic: bool) -> f32 {
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
fn fake_quantize_kernel<F: Float, N: Size>(
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
fn quantize_kernel<F: Float>(
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

/// Cubes of `per_cube` units covering `units` units: cubecl's element-wise count, spread over
/// the device's per-dimension limits (kernels index with [`unit_index`] or `CUBE_POS`).
pub(crate) fn cube_count<R: Runtime>(
    client: &ComputeClient<R>,
    units: usize,
    per_cube: u32,
) -> CubeCount {
    cubecl::calculate_cube_count_elemwise(client, units.max(1), CubeDim::new_1d(per_cube))
}

/// Checks that a device buffer holds `len` elements of `elem_size` bytes, so a kernel given
/// this handle and length cannot read past its end.
pub(crate) fn check_buffer(
    what: &str,
    handle: &Handle,
    len: usize,
    elem_size: usize,
) -> Result<()> {
    let found = handle.size_in_used() as usize / elem_size;
    if found < len {
        return Err(KernelError::Shape {
            what: what.to_string(),
            expected: len,
            found,
        });
    }
    Ok(())
}

/// Per-group grids computed on the device, and what the apply kernels need with them.
pub(crate) struct DeviceGrids {
    pub grids: Handle,
    pub groups: usize,
    pub group_len: usize,
    pub kind: GridKind,
    pub keys: (u32, u32),
    /// Elements per vectorised load: divides the group length.
    pub width: usize,
}

/// The widest vector (in elements of `elem_size` bytes) the device loads at once that divides
/// `group_len`, so no vector straddles two groups, and that the buffer's start is aligned to
/// (a tensor can be a view into a larger buffer).
fn vector_width<R: Runtime>(
    client: &ComputeClient<R>,
    input: &Handle,
    elem_size: usize,
    group_len: usize,
) -> usize {
    let offset = input.offset_start.unwrap_or(0) as usize;
    client
        .io_optimized_vector_sizes(elem_size)
        .find(|&w| group_len.is_multiple_of(w) && offset.is_multiple_of(w * elem_size))
        .unwrap_or(1)
}

/// Steps 1 and 2: checks the spec, computes every group's grid, and fails on non-finite input.
pub(crate) fn device_grids<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    input: &Handle,
    len: usize,
    name: &str,
    spec: &QuantSpec,
) -> Result<DeviceGrids> {
    let group_len = spec.check(name, len)?;
    moq_core::check_indexable(name, len)?;
    check_buffer(name, input, len, size_of::<F>())?;
    let groups = spec.groups;
    let width = vector_width::<R>(client, input, size_of::<F>(), group_len);
    let pieces = group_len.div_ceil(SPAN).max(1);
    let total = groups * pieces;
    let partials = client.empty(total * PARTIAL * size_of::<f32>());
    let grids = client.empty(groups.max(1) * GRID * size_of::<f32>());
    let bad = client.create_from_slice(u32::as_bytes(&[0]));
    let stats = |past_threshold: bool| {
        // SAFETY: `input` holds `len` elements (checked above), read as `len / width` vectors
        // (`width` divides the group length, hence `len`); `grids` and `partials` were
        // allocated here with the lengths given; every index is below `total` pieces.
        unsafe {
            stats_kernel::launch_unchecked::<F, R>(
                client,
                cube_count(client, total * UNITS as usize, UNITS),
                CubeDim::new_1d(UNITS),
                width,
                ArrayArg::from_raw_parts(input.clone(), len / width),
                ArrayArg::from_raw_parts(grids.clone(), groups * GRID),
                ArrayArg::from_raw_parts(partials.clone(), total * PARTIAL),
                group_len as u32,
                pieces as u32,
                total as u32,
                past_threshold,
                width as u32,
            )
        };
        // Merge each group's partials, 256 at a time, down to one.
        let (mut current, mut count) = (partials.clone(), pieces);
        while count > 1 {
            let next_count = count.div_ceil(UNITS as usize);
            let next = client.empty(groups * next_count * PARTIAL * size_of::<f32>());
            // SAFETY: both buffers were allocated here with the lengths given; the kernel
            // reads input partials below `pieces_in` of each group only.
            unsafe {
                merge_kernel::launch_unchecked::<R>(
                    client,
                    cube_count(client, groups * next_count * UNITS as usize, UNITS),
                    CubeDim::new_1d(UNITS),
                    ArrayArg::from_raw_parts(current, groups * count * PARTIAL),
                    ArrayArg::from_raw_parts(next.clone(), groups * next_count * PARTIAL),
                    count as u32,
                    next_count as u32,
                    (groups * next_count) as u32,
                )
            };
            (current, count) = (next, next_count);
        }
        current
    };
    // SAFETY: `merged` holds one partial per group and `grids` one record per group, both
    // allocated here; units past `groups` return at once.
    let grid = |merged: Handle, step: GridStep| unsafe {
        grid_kernel::launch_unchecked::<R>(
            client,
            cube_count(client, groups, 64),
            CubeDim::new_1d(64),
            ArrayArg::from_raw_parts(merged, groups * PARTIAL),
            ArrayArg::from_raw_parts(grids.clone(), groups * GRID),
            ArrayArg::from_raw_parts(bad.clone(), 1),
            groups as u32,
            group_len as u32,
            step,
            spec.bits.max(3),
            spec.quant_type == QuantType::Symmetric,
        )
    };
    let kind = GridKind::of(spec.bits);
    if len > 0 {
        let merged = stats(false);
        match kind {
            GridKind::Binary => grid(merged, GridStep::Binary),
            GridKind::Ternary => {
                grid(merged, GridStep::TernaryThreshold);
                grid(stats(true), GridStep::TernaryAlpha);
            }
            GridKind::Linear => grid(merged, GridStep::Linear),
        }
        let bad = read::<R, u32>(client, bad)?;
        if bad[0] != 0 {
            return Err(KernelError::NonFinite {
                tensor: name.to_string(),
            });
        }
    }
    let keys = match spec.rounding {
        Rounding::Stochastic => {
            let k = spec.noise.keys();
            (k.k0, k.k1)
        }
        Rounding::Nearest => (0, 0),
    };
    Ok(DeviceGrids {
        grids,
        groups,
        group_len,
        kind,
        keys,
        width,
    })
}

/// Reads a buffer back to the host.
pub(crate) fn read<R: Runtime, E: CubeElement>(
    client: &ComputeClient<R>,
    handle: Handle,
) -> Result<Vec<E>> {
    let bytes = client.read_one(handle).map_err(|e| KernelError::Read {
        message: format!("{e:?}"),
    })?;
    Ok(E::from_bytes(&bytes).to_vec())
}

/// Fused fake quantization of a device tensor of `len` elements of `F` (f32, f16 or bf16):
/// returns a new tensor holding `ρ·x + (1−ρ)·Q(x)` with `ρ = mix_ratio` (0: plain `Q(x)`), the
/// same grids as `moq_core::fake_quantize_mixed` (see the module docs for the last-bit
/// differences). `name` names the tensor in errors.
pub fn fake_quantize<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    input: &Handle,
    len: usize,
    name: &str,
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<Handle> {
    if !(0.0..=1.0).contains(&mix_ratio) {
        return Err(moq_core::MoqError::UnsupportedMode {
            tensor: name.to_string(),
            reason: format!("mixing ratio {mix_ratio} is not in [0, 1]"),
        }
        .into());
    }
    let grids = device_grids::<R, F>(client, input, len, name, spec)?;
    let out = client.empty(len * size_of::<F>());
    if len == 0 {
        return Ok(out);
    }
    let (width, vectors) = (grids.width, len / grids.width);
    // SAFETY: `input` holds `len` elements (checked by `device_grids`), `out` was allocated
    // with `len`; both are read as `vectors` vectors of `width`; units past `vectors` return.
    unsafe {
        fake_quantize_kernel::launch_unchecked::<F, R>(
            client,
            cube_count(client, vectors, UNITS_ELEMENTWISE),
            CubeDim::new_1d(UNITS_ELEMENTWISE),
            width,
            ArrayArg::from_raw_parts(input.clone(), vectors),
            ArrayArg::from_raw_parts(grids.grids.clone(), grids.groups * GRID),
            ArrayArg::from_raw_parts(out.clone(), vectors),
            vectors as u32,
            grids.group_len as u32,
            grids.keys.0,
            grids.keys.1,
            mix_ratio,
            grids.kind,
            spec.rounding == Rounding::Stochastic,
            mix_ratio != 0.0,
            width as u32,
        )
    };
    Ok(out)
}

/// Codes of a device tensor in the `Packed32` layout (rows of `row_len` padded to whole words),
/// with the grids they were computed on.
pub(crate) struct DeviceCodes {
    pub words: Handle,
    pub words_len: usize,
    pub grids: DeviceGrids,
}

/// Steps 1–3 for codes: the packed words on the device.
pub(crate) fn quantize_words<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    input: &Handle,
    len: usize,
    row_len: usize,
    name: &str,
    spec: &QuantSpec,
) -> Result<DeviceCodes> {
    let shape = PackedShape::of_flat(len, row_len, spec.bits, spec.quant_type, spec.groups)
        .map_err(|e| KernelError::Layout {
            reason: format!("tensor `{name}`: {e}"),
        })?;
    let grids = device_grids::<R, F>(client, input, len, name, spec)?;
    let (words_per_row, words_len) = (shape.words_per_row(), shape.words());
    let words = client.empty(words_len.max(1) * size_of::<u32>());
    if words_len > 0 {
        // SAFETY: `input` holds `len` elements (checked by `device_grids`), `words` was
        // allocated with `words_len`; a unit reads only the columns `< row_len` of its row.
        unsafe {
            quantize_kernel::launch_unchecked::<F, R>(
                client,
                cube_count(client, words_len, UNITS),
                CubeDim::new_1d(UNITS),
                ArrayArg::from_raw_parts(input.clone(), len),
                ArrayArg::from_raw_parts(grids.grids.clone(), grids.groups * GRID),
                ArrayArg::from_raw_parts(words.clone(), words_len),
                words_len as u32,
                row_len as u32,
                words_per_row as u32,
                grids.group_len as u32,
                grids.keys.0,
                grids.keys.1,
                spec.bits,
                grids.kind,
                spec.rounding == Rounding::Stochastic,
                spec.quant_type == QuantType::Asymmetric,
            )
        };
    }
    Ok(DeviceCodes {
        words,
        words_len,
        grids,
    })
}

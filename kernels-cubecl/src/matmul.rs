//! Low-bit-weight matmul `y = x · dequant(W)`: `x` is `[m, k]` of `F` (f32 or f16), `W` a
//! [`DeviceWeights`] `[k, n]` (codes of any width 1–8 in the `Packed32` layout, f32 or f16
//! scales, symmetric or asymmetric), `y` is `[m, n]` of `F`. Products accumulate in f32; the
//! codes are dequantized in registers (GEMV) or in shared memory (tiled), never in global memory.
//!
//! Two kernels, chosen by [`choose_kernel`]:
//! - **GEMV** for `m ≤ 16`, bound by loading the weights: each unit owns a vector of
//!   `vec` words (up to 16 bytes, one vectorised load per row of `W`) across all of `x`'s rows
//!   (`rows` accumulators per code, in registers), so `W` is read once per block of rows. A cube
//!   is 32 vector columns × 8 lanes along `k` whose sums meet in shared memory; beyond that the
//!   inner dimension is split over cubes (split-K, while the partials cost at most a tenth of
//!   the weight bytes), and a second kernel sums the slices in a fixed order (deterministic, no
//!   atomics).
//! - **Tiled** for larger `m`: a cube computes a 64×64 tile of `y`, staging 32-deep slices of `x`
//!   and of the dequantized `W` in shared memory (a unit per packed word); each unit computes a
//!   4×4 block.
//!
//! Both are correct for any shape: rows not a multiple of the codes per word, groups that
//! straddle rows, sizes that are not multiples of the vector width or the tiles.

use cubecl::prelude::*;
use cubecl::server::Handle;
use half::f16;
use moq_core::{QuantType, ScaleFormat};

use crate::error::{KernelError, Result};
use crate::quant::{check_buffer, cube_count, unit_index};
use crate::weights::{DeviceWeights, field};

/// Largest `m` served by the GEMV kernel.
pub const GEMV_MAX_M: usize = 16;
/// Cubes the GEMV aims to launch (enough to fill a large GPU), reached by splitting `k`.
const GEMV_TARGET_CUBES: usize = 512;
/// GEMV cube: units along the columns of `W` (a warp reads one row's vectors contiguously)…
const GEMV_COLUMNS: u32 = 32;
/// …times lanes along `k`, each taking every `GEMV_LANES`-th row of the cube's slice; the lanes'
/// sums are added in shared memory, which multiplies the loads in flight without split-K's
/// traffic.
const GEMV_LANES: u32 = 8;
/// Smallest slice of `k` one GEMV cube takes.
const GEMV_MIN_K_SLICE: usize = 64;

const TILE_M: u32 = 64;
const TILE_N: u32 = 64;
const TILE_K: u32 = 32;

/// The kernel a matmul shape gets, and its static parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The GEMV kernel.
    Gemv {
        /// Rows of `x` per unit (a power of two ≥ `m`, at most 16).
        rows: u32,
        /// Words per unit and vectorised load (1, 2 or 4).
        vec: u32,
        /// Slices of `k`.
        splits: u32,
        /// Rows of `W` per slice.
        k_per_split: u32,
    },
    /// The tiled kernel.
    Tiled,
}

/// Chooses the kernel and its parameters for `x [m, k] · W [k, n]` with `bits`-bit codes.
pub fn choose_kernel(m: usize, k: usize, n: usize, bits: u32) -> Kernel {
    if m > GEMV_MAX_M {
        return Kernel::Tiled;
    }
    let per_word = moq_core::codes_per_word(bits);
    let words_per_row = n.div_ceil(per_word);
    let rows = m.max(1).next_power_of_two();
    // At most 32 accumulators per unit from vectorisation; rows alone may need more.
    let vec = [4usize, 2, 1]
        .into_iter()
        .find(|&v| words_per_row.is_multiple_of(v) && rows * per_word * v <= 32)
        .unwrap_or(1);
    let cubes = (words_per_row / vec).div_ceil(GEMV_COLUMNS as usize).max(1);
    let wanted = GEMV_TARGET_CUBES.div_ceil(cubes * m.div_ceil(rows));
    // Each slice writes and the sum reads `m · n` f32 partials: keep that traffic within a tenth
    // of the weight bytes read (`k · n · bits / 8`), so split-K never costs more than it gains.
    let traffic_bound = (k * bits as usize) / (8 * 8 * 10 * m.max(1));
    let splits = wanted
        .min(traffic_bound)
        .min(k.div_ceil(GEMV_MIN_K_SLICE))
        .max(1);
    let k_per_split = k.div_ceil(splits).max(1);
    Kernel::Gemv {
        rows: rows as u32,
        vec: vec as u32,
        splits: k.div_ceil(k_per_split).max(1) as u32,
        k_per_split: k_per_split as u32,
    }
}

/// `y = x · dequant(W)` for `x` of `m` rows (`[m, k]` of `F`, row-major on the device);
/// returns `y` (`[m, n]` of `F`).
pub fn matmul<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    m: usize,
    w: &DeviceWeights,
) -> Result<Handle> {
    moq_core::check_indexable("matmul input x", m.saturating_mul(w.shape.rows))?;
    moq_core::check_indexable("matmul output", m.saturating_mul(w.shape.row_len))?;
    check_buffer("matmul input x", x, m * w.shape.rows, size_of::<F>())?;
    // Tiles go along the cube grid's x (columns) and y (rows) axes, each at most 65535 cubes
    // long on every API (the GEMV's grid is smaller).
    for (what, len, tile) in [
        ("rows of x", m, TILE_M),
        ("columns of W", w.shape.row_len, TILE_N),
    ] {
        let max = u16::MAX as usize * tile as usize;
        if len > max {
            return Err(KernelError::Shape {
                what: format!("matmul {what} (at most 65535 tiles of {tile})"),
                expected: max,
                found: len,
            });
        }
    }
    let out = client.empty((m * w.shape.row_len).max(1) * size_of::<F>());
    if m == 0 || w.shape.row_len == 0 {
        return Ok(out);
    }
    match w.scale_format {
        ScaleFormat::F32 => launch::<R, F, f32>(client, x, m, w, &out),
        ScaleFormat::F16 => launch::<R, F, f16>(client, x, m, w, &out),
    }
    Ok(out)
}

fn launch<R: Runtime, F: Float + CubeElement, S: Float + CubeElement>(
    client: &ComputeClient<R>,
    x: &Handle,
    m: usize,
    w: &DeviceWeights,
    out: &Handle,
) {
    let asymmetric = w.shape.quant_type == QuantType::Asymmetric;
    let per_word = w.shape().codes_per_word();
    let group_size = w.group_size();
    let launch = Launch {
        client,
        x,
        m,
        w,
        out,
        asymmetric,
        zero_len: if asymmetric { w.shape.groups } else { 1 },
        // Every word lies in one group: one scale per word.
        word_groups: group_size.is_multiple_of(per_word)
            && w.shape.row_len.is_multiple_of(per_word),
    };
    match choose_kernel(m, w.shape.rows, w.shape.row_len, w.shape.bits) {
        Kernel::Gemv {
            rows,
            vec,
            splits,
            k_per_split,
        } => launch.gemv::<F, S>(rows, vec, splits, k_per_split),
        Kernel::Tiled => launch.tiled::<F, S>(),
    }
}

/// One product `x · dequant(W)` to launch, its arguments checked by [`matmul`].
struct Launch<'a, R: Runtime> {
    client: &'a ComputeClient<R>,
    x: &'a Handle,
    m: usize,
    w: &'a DeviceWeights,
    out: &'a Handle,
    asymmetric: bool,
    /// Zero points held: one per group when asymmetric, a placeholder otherwise.
    zero_len: usize,
    word_groups: bool,
}

impl<R: Runtime> Launch<'_, R> {
    /// The GEMV: `splits` slices of `k`, each summed into `partials`, then summed into `out`.
    fn gemv<F: Float + CubeElement, S: Float + CubeElement>(
        &self,
        rows: u32,
        vec: u32,
        splits: u32,
        k_per_split: u32,
    ) {
        let (client, m, w) = (self.client, self.m, self.w);
        let partials = client.empty(splits as usize * m * w.shape.row_len * size_of::<f32>());
        let vectors_per_row = w.words_per_row() / vec as usize;
        // SAFETY: `matmul` checked that `x` holds `m · k` elements, and the weights' buffers
        // were checked against their shape when built (`DeviceWeights`); `partials` and `out`
        // were allocated with the lengths given; `vec` divides the words per row, and units
        // outside `m`, the row's vectors or their slice of `k` read nothing.
        unsafe {
            gemv_kernel::launch_unchecked::<F, S, R>(
                client,
                CubeCount::Static(
                    vectors_per_row.div_ceil(GEMV_COLUMNS as usize) as u32,
                    m.div_ceil(rows as usize) as u32,
                    splits,
                ),
                CubeDim::new_2d(GEMV_COLUMNS, GEMV_LANES),
                vec as usize,
                ArrayArg::from_raw_parts(self.x.clone(), m * w.shape.rows),
                ArrayArg::from_raw_parts(w.words.clone(), w.shape.words() / vec as usize),
                ArrayArg::from_raw_parts(w.scales.clone(), w.shape.groups),
                ArrayArg::from_raw_parts(w.zero_points.clone(), self.zero_len),
                ArrayArg::from_raw_parts(partials.clone(), splits as usize * m * w.shape.row_len),
                m as u32,
                w.shape.rows as u32,
                w.shape.row_len as u32,
                vectors_per_row as u32,
                w.group_size() as u32,
                k_per_split,
                w.shape.bits,
                self.asymmetric,
                rows,
                vec,
                self.word_groups,
            );
            sum_splits_kernel::launch_unchecked::<F, R>(
                client,
                cube_count(client, m * w.shape.row_len, 256),
                CubeDim::new_1d(256),
                ArrayArg::from_raw_parts(partials, splits as usize * m * w.shape.row_len),
                ArrayArg::from_raw_parts(self.out.clone(), m * w.shape.row_len),
                (m * w.shape.row_len) as u32,
                splits,
            );
        }
    }

    /// The tiled matmul: one cube per `TILE_M × TILE_N` tile of `out`.
    fn tiled<F: Float + CubeElement, S: Float + CubeElement>(&self) {
        let (m, w) = (self.m, self.w);
        // SAFETY: as for the GEMV; the kernel masks the rows, columns and words outside the
        // tile's part of `x`, `W` and `y`.
        unsafe {
            tiled_kernel::launch_unchecked::<F, S, R>(
                self.client,
                CubeCount::Static(
                    w.shape.row_len.div_ceil(TILE_N as usize) as u32,
                    m.div_ceil(TILE_M as usize) as u32,
                    1,
                ),
                CubeDim::new_2d(16, 16),
                ArrayArg::from_raw_parts(self.x.clone(), m * w.shape.rows),
                ArrayArg::from_raw_parts(w.words.clone(), w.shape.words()),
                ArrayArg::from_raw_parts(w.scales.clone(), w.shape.groups),
                ArrayArg::from_raw_parts(w.zero_points.clone(), self.zero_len),
                ArrayArg::from_raw_parts(self.out.clone(), m * w.shape.row_len),
                m as u32,
                w.shape.rows as u32,
                w.shape.row_len as u32,
                w.words_per_row() as u32,
                w.group_size() as u32,
                w.shape.bits,
                self.asymmetric,
                self.word_groups,
            )
        }
    }
}

/// `(code − z')·s` of the code of group `g`.
#[cube]
fn dequant<S: Float>(
    code: f32,
    scales: &Array<S>,
    zero_points: &Array<i32>,
    g: usize,
    #[comptime] asymmetric: bool,
) -> f32 {
    let q = if asymmetric {
        code - f32::cast_from(zero_points[g])
    } else {
        code
    };
    q * f32::cast_from(scales[g])
}

/// GEMV: unit `(vector column, block of rows, slice of k)`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn gemv_kernel<F: Float, S: Float, N: Size>(
    x: &Array<F>,
    words: &Array<Vector<u32, N>>,
    scales: &Array<S>,
    zero_points: &Array<i32>,
    partials: &mut Array<f32>,
    m: u32,
    k: u32,
    cols: u32,
    vectors_per_row: u32,
    group_size: u32,
    k_per_split: u32,
    #[comptime] bits: u32,
    #[comptime] asymmetric: bool,
    #[comptime] rows: u32,
    #[comptime] vec: u32,
    #[comptime] word_groups: bool,
) {
    let vcol = CUBE_POS_X * GEMV_COLUMNS + UNIT_POS_X;
    let lane = UNIT_POS_Y;
    // Every unit reaches the lanes' reduction (it synchronises the cube).
    let active = vcol < vectors_per_row;
    let per_word = comptime!(32 / bits);
    let per_vec = comptime!(per_word * vec);
    let row0 = CUBE_POS_Y * rows;
    let split = CUBE_POS_Z;
    let mut acc = Array::<f32>::new(comptime!((rows * per_vec) as usize));
    #[unroll]
    for a in 0..rows * per_vec {
        acc[a as usize] = 0.0;
    }
    let mut xs = Array::<f32>::new(comptime!(rows as usize));
    let k_start = split * k_per_split;
    let k_end = u32::min(k, k_start + k_per_split);
    let mut kk = k_start + lane;
    while active && kk < k_end {
        #[unroll]
        for r in 0..rows {
            let row = row0 + r;
            xs[r as usize] = if row < m {
                f32::cast_from(x[(row * k + kk) as usize])
            } else {
                f32::new(0.0)
            };
        }
        let packed = words[(kk * vectors_per_row + vcol) as usize];
        #[unroll]
        for v in 0..vec {
            let word = packed[v as usize];
            let col0 = (vcol * vec + v) * per_word;
            let word_scale = if word_groups {
                let g = ((kk * cols + col0) / group_size) as usize;
                dequant(1.0, scales, zero_points, g, false)
            } else {
                f32::new(0.0)
            };
            let word_zero = if word_groups && asymmetric {
                f32::cast_from(zero_points[((kk * cols + col0) / group_size) as usize])
            } else {
                f32::new(0.0)
            };
            #[unroll]
            for j in 0..per_word {
                let col = col0 + j;
                let code = field(word, j, bits);
                let w = if word_groups {
                    (code - word_zero) * word_scale
                } else if col < cols {
                    dequant(
                        code,
                        scales,
                        zero_points,
                        ((kk * cols + col) / group_size) as usize,
                        asymmetric,
                    )
                } else {
                    f32::new(0.0)
                };
                #[unroll]
                for r in 0..rows {
                    let a = (r * per_vec + v * per_word + j) as usize;
                    acc[a] += xs[r as usize] * w;
                }
            }
        }
        kk += GEMV_LANES;
    }
    // Add the lanes' sums, one accumulator at a time, in lane order (a loop, not unrolled: it
    // runs once per cube, and unrolling it only makes shaders large).
    let mut sums = SharedMemory::<f32>::new(comptime!((GEMV_COLUMNS * GEMV_LANES) as usize));
    for a in 0..comptime!(rows * per_vec) {
        sums[(lane * GEMV_COLUMNS + UNIT_POS_X) as usize] = acc[a as usize];
        sync_cube();
        let row = row0 + a / per_vec;
        let col = vcol * per_vec + a % per_vec;
        if lane == 0 && active && row < m && col < cols {
            let mut sum = f32::new(0.0);
            #[unroll]
            for l in 0..GEMV_LANES {
                sum += sums[(l * GEMV_COLUMNS + UNIT_POS_X) as usize];
            }
            partials[((split * m + row) * cols + col) as usize] = sum;
        }
        sync_cube();
    }
}

/// Sums the split-K slices in order and converts to `F`.
#[cube(launch_unchecked)]
fn sum_splits_kernel<F: Float>(partials: &Array<f32>, out: &mut Array<F>, len: u32, splits: u32) {
    let i = unit_index();
    if i >= len {
        terminate!();
    }
    let mut sum = 0.0f32;
    for s in 0..splits {
        sum += partials[(s * len + i) as usize];
    }
    out[i as usize] = F::cast_from(sum);
}

/// Tiled: a cube per 64×64 tile of `y`, 16×16 units of 4×4 outputs each.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn tiled_kernel<F: Float, S: Float>(
    x: &Array<F>,
    words: &Array<u32>,
    scales: &Array<S>,
    zero_points: &Array<i32>,
    y: &mut Array<F>,
    m: u32,
    k: u32,
    n: u32,
    words_per_row: u32,
    group_size: u32,
    #[comptime] bits: u32,
    #[comptime] asymmetric: bool,
    #[comptime] word_groups: bool,
) {
    let per_word = comptime!(32 / bits);
    let row0 = CUBE_POS_Y * TILE_M;
    let col0 = CUBE_POS_X * TILE_N;
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let t = UNIT_POS;
    let mut xs = SharedMemory::<f32>::new(comptime!((TILE_M * TILE_K) as usize));
    let mut ws = SharedMemory::<f32>::new(comptime!((TILE_K * TILE_N) as usize));
    let mut acc = Array::<f32>::new(16usize);
    #[unroll]
    for a in 0..16u32 {
        acc[a as usize] = 0.0;
    }
    let mut a_reg = Array::<f32>::new(4usize);
    let mut b_reg = Array::<f32>::new(4usize);
    let mut k0 = 0u32;
    while k0 < k {
        #[unroll]
        for e in 0..comptime!(TILE_M * TILE_K / 256) {
            let idx = t + e * 256;
            let r = idx / TILE_K;
            let c = idx % TILE_K;
            let (gr, gc) = (row0 + r, k0 + c);
            xs[idx as usize] = if gr < m && gc < k {
                f32::cast_from(x[(gr * k + gc) as usize])
            } else {
                f32::new(0.0)
            };
        }
        // A unit per packed word overlapping the tile's columns: one load, then the word's codes
        // that fall in the tile into shared memory. Words tile the 64 columns exactly for 1, 2,
        // 4 and 8 bits; for other widths a word can straddle the tile's edge.
        let first_word = col0 / per_word;
        // Aligned tiles hold 64 / per_word words; a misaligned start can touch one more.
        let tile_words = comptime!(if TILE_N.is_multiple_of(per_word) {
            TILE_N / per_word
        } else {
            (TILE_N - 1).div_ceil(per_word) + 1
        });
        #[unroll]
        for e in 0..comptime!((TILE_K * tile_words).div_ceil(256)) {
            let idx = t + e * 256;
            if idx < comptime!(TILE_K * tile_words) {
                let r = idx / tile_words;
                let word_col = first_word + idx % tile_words;
                let (gr, gc0) = (k0 + r, word_col * per_word);
                let inside = gr < k && gc0 < n;
                let word = if inside {
                    words[(gr * words_per_row + word_col) as usize]
                } else {
                    u32::new(0)
                };
                let g = if inside {
                    (gr * n + gc0) / group_size
                } else {
                    u32::new(0)
                } as usize;
                let word_scale = if word_groups && inside {
                    dequant(1.0, scales, zero_points, g, false)
                } else {
                    f32::new(0.0)
                };
                let word_zero = if word_groups && asymmetric && inside {
                    f32::cast_from(zero_points[g])
                } else {
                    f32::new(0.0)
                };
                #[unroll]
                for j in 0..per_word {
                    let gc = gc0 + j;
                    if gc >= col0 && gc < col0 + TILE_N {
                        let code = field(word, j, bits);
                        ws[(r * TILE_N + gc - col0) as usize] = if !inside || gc >= n {
                            f32::new(0.0)
                        } else if word_groups {
                            (code - word_zero) * word_scale
                        } else {
                            dequant(
                                code,
                                scales,
                                zero_points,
                                ((gr * n + gc) / group_size) as usize,
                                asymmetric,
                            )
                        };
                    }
                }
            }
        }
        sync_cube();
        for kk in 0..TILE_K {
            #[unroll]
            for i in 0..4u32 {
                a_reg[i as usize] = xs[((ty * 4 + i) * TILE_K + kk) as usize];
                b_reg[i as usize] = ws[(kk * TILE_N + tx * 4 + i) as usize];
            }
            #[unroll]
            for i in 0..4u32 {
                #[unroll]
                for j in 0..4u32 {
                    acc[(i * 4 + j) as usize] += a_reg[i as usize] * b_reg[j as usize];
                }
            }
        }
        sync_cube();
        k0 += TILE_K;
    }
    #[unroll]
    for i in 0..4u32 {
        #[unroll]
        for j in 0..4u32 {
            let (row, col) = (row0 + ty * 4 + i, col0 + tx * 4 + j);
            if row < m && col < n {
                y[(row * n + col) as usize] = F::cast_from(acc[(i * 4 + j) as usize]);
            }
        }
    }
}

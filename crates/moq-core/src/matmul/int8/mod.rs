//! `y ≈ x · dequant(W)` with **int8 activations**: the opt-in fast path of the CPU matmul, the
//! way llama.cpp's Q8 activations and onnxruntime's `MatMulNBits` at accuracy level 4 work.
//! Each row of `x` is quantized to int8 per block of 32 elements of `K` (with the weight's
//! group scales folded in, see `activations.rs`), and the codes are multiplied with it in
//! integers (`simd/dot.rs`: AVX2 `maddubs`, or plain integers), so a code costs a fraction of
//! the f32 path's decode. The error is the activations' rounding: about 0.5% relative for
//! Gaussian inputs (tests bound it); [`super::matmul`] stays the exact default.
//!
//! The weight is repacked once, at load time, into a [`TiledWeight`]: tiles of 8 columns whose
//! codes run down `K` (4 rows of a column in 4 consecutive bytes, or 8 in 4 bytes of nibbles for
//! 1–4 bits), tile after tile, so a thread streams its columns' codes in one sequential read.
//! Widths 1–4 are stored as nibbles (2–4 bits pay the nibble's size), 5–8 as bytes. The
//! groups must not split a tile: groups of a multiple of 8 elements that divide a row, or
//! groups of whole rows.
//!
//! ```
//! use moq_core::matmul::{PackedMatrix, TiledWeight, matmul, matmul_i8};
//! use moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, pack, quantize};
//!
//! let (k, n) = (256, 64);
//! let w: Vec<f32> = (0..k * n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let q = quantize("w", &w, &QuantSpec::new(4, QuantType::Symmetric, k * n / 32)).unwrap();
//! let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
//! let matrix = PackedMatrix::from_packed(&packed).unwrap();
//! let tiled = TiledWeight::new(&matrix).unwrap();
//! let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.1).sin()).collect();
//! let (mut exact, mut fast) = (vec![0.0f32; n], vec![0.0f32; n]);
//! matmul(&x, &matrix, &mut exact).unwrap();
//! matmul_i8(&x, &tiled, &mut fast).unwrap();
//! let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
//! let diff: Vec<f32> = exact.iter().zip(&fast).map(|(a, b)| a - b).collect();
//! assert!(norm(&diff) < 0.02 * norm(&exact));
//! ```

pub(crate) mod activations;
pub(crate) mod job;
mod repack;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use super::rows_of;
use crate::error::Result;
use crate::simd::{self, Isa};
use activations::Quantized;
use job::{DotJob, TILE};

pub use repack::TiledWeight;

/// The most rows of `x` for which int8 activations pay: above it the f32 path
/// ([`super::matmul`]) is faster, and exact. Measured on a 2-core AMD EPYC (AVX2), symmetric groups of 128, W4
/// and W8: int8 is 1.1–5× faster at 1–4 rows, 0.76–2.1× at 8 (slower on MiniLM's 384×1536 and
/// 1536×384, faster at 4096²), 0.53–1.3× at 16 and slower at 32 (docs/benchmarks.md). Callers
/// that choose a path per call (moq-burn's NdArray backend) take int8 up to this many rows.
pub const INT8_MAX_ROWS: usize = 8;

/// [`matmul_i8_with`] on the best instruction set of this CPU.
pub fn matmul_i8(x: &[f32], w: &TiledWeight, y: &mut [f32]) -> Result<()> {
    matmul_i8_with(Isa::best(), x, w, y)
}

/// `y ≈ x · dequant(W)` for `x` of `m = x.len() / k` rows into `y` (`[m, n]`), with each row
/// of `x` quantized to int8, on `isa` (an error if this CPU lacks it) and all of rayon's
/// threads. Errors name a length that does not fit; nothing is written then.
pub fn matmul_i8_with(isa: Isa, x: &[f32], w: &TiledWeight, y: &mut [f32]) -> Result<()> {
    super::check_isa(isa)?;
    let (k, n) = (w.k, w.n);
    let m = rows_of(x.len(), y.len(), k, n)?;
    if k == 0 {
        y.fill(0.0);
        return Ok(());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let rows: Vec<Quantized> = x.chunks(k).map(|x| Quantized::new(isa, x, w)).collect();
    let job = DotJob {
        storage: w.storage,
        k_pad: w.k_pad,
        codes: &w.codes,
    };
    let per_task = w
        .tiles
        .div_ceil(rayon::current_num_threads())
        .max(
            PAR_MIN_BYTES
                .div_ceil(job.storage.tile_bytes(w.k_pad) * m)
                .min(w.tiles),
        )
        .max(1);
    let task = |first: usize| {
        let count = per_task.min(w.tiles - first);
        let mut out = vec![0.0f32; m * count * TILE];
        for t in first..first + count {
            let a = w.lane_of_tile(t);
            let at = |r: usize| (r * count + t - first) * TILE;
            // Four rows of `x` per pass over the tile's codes, then the rest one by one.
            let mut r = 0;
            while r + 4 <= m {
                let lanes = [0, 1, 2, 3].map(|i| rows[r + i].lane(a));
                let sums = simd::dot::tile(isa, &job, t, lanes.each_ref());
                for (i, sums) in sums.iter().enumerate() {
                    write(
                        &mut out[at(r + i)..at(r + i) + TILE],
                        sums,
                        rows[r + i].offset(a),
                    );
                }
                r += 4;
            }
            for r in r..m {
                let [sums] = simd::dot::tile(isa, &job, t, [&rows[r].lane(a)]);
                write(&mut out[at(r)..at(r) + TILE], &sums, rows[r].offset(a));
            }
        }
        (first, count, out)
    };
    let firsts: Vec<usize> = (0..w.tiles).step_by(per_task).collect();
    let tasks: Vec<(usize, usize, Vec<f32>)> = match firsts.len() {
        1 => vec![task(0)],
        _ => firsts.into_par_iter().map(task).collect(),
    };
    for (first, count, out) in tasks {
        let c0 = first * TILE;
        let width = (count * TILE).min(n - c0);
        for (r, row) in out.chunks(count * TILE).enumerate() {
            y[r * n + c0..r * n + c0 + width].copy_from_slice(&row[..width]);
        }
    }
    Ok(())
}

/// A tile's sums plus its lane's offset.
fn write(out: &mut [f32], sums: &[f32; TILE], offset: f32) {
    for (o, s) in out.iter_mut().zip(sums) {
        *o = s + offset;
    }
}

/// Below this many bytes of codes times rows of `x`, a task is not worth a thread.
const PAR_MIN_BYTES: usize = 1 << 18;

//! `y = x · dequant(W)` on the CPU, straight from `Packed32` codes: each packed word is read
//! once per call, its codes are dequantized in registers and multiplied in f32; `dequant(W)` is
//! never built in memory. This is the CPU side of low-bit inference (the GPU side is
//! `moq-kernels`): `moq-burn` runs it for a `PackedWeight` on NdArray.
//!
//! How it works, one file per part:
//! - [`PackedMatrix`] (here) borrows a packed `[k, n]` weight and checks it against its
//!   [`PackedShape`];
//! - `block` computes one *column block* of `y`: `L` consecutive words of every row of `W`
//!   (`L · 32/b` columns). For one row of `x` it keeps the block's accumulators in registers
//!   (the GEMV); for several rows it dequantizes a slice of the block into an L1-sized scratch
//!   once and multiplies every row of `x` with it;
//! - the crate's `simd` module holds the few vector operations that code uses, for AVX-512,
//!   AVX2 + FMA and plain arrays (the portable fallback; `simd/vector.rs`), compiles the block
//!   code with each and picks one at run time ([`Isa::best`]; `simd/matmul.rs`); nothing
//!   depends on `target-cpu=native`;
//! - [`Word`] (`word.rs`): the words as stored, `u32`, `i32` or `i64`;
//! - [`matmul`] splits the column blocks over rayon's threads.
//!
//! ```
//! use moq_core::matmul::{PackedMatrix, matmul};
//! use moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, dequantize, pack, quantize};
//!
//! let (k, n) = (64, 40);
//! let w: Vec<f32> = (0..k * n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let q = quantize("w", &w, &QuantSpec::new(4, QuantType::Symmetric, 20)).unwrap();
//! let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
//! let x: Vec<f32> = (0..2 * k).map(|i| (i as f32 * 0.1).sin()).collect();
//! let mut y = vec![0.0f32; 2 * n];
//! matmul(&x, &PackedMatrix::from_packed(&packed).unwrap(), &mut y).unwrap();
//!
//! let mut dq = vec![0.0f32; k * n];
//! dequantize(&q, &mut dq).unwrap();
//! for (r, row) in y.chunks(n).enumerate() {
//!     for (c, &v) in row.iter().enumerate() {
//!         let want: f32 = (0..k).map(|i| x[r * k + i] * dq[i * n + c]).sum();
//!         assert!((v - want).abs() < 1e-4);
//!     }
//! }
//! ```

pub(crate) mod block;
pub(crate) mod int8;
mod word;

use half::f16;
use rayon::prelude::*;

use crate::config::QuantType;
use crate::error::{MoqError, Result};
use crate::layout::PackedShape;
use crate::pack::{PackedCodes, PackedScales, PackedTensor};
use crate::simd::{self, Isa};

pub use int8::{INT8_MAX_ROWS, TiledWeight, matmul_i8, matmul_i8_with};
pub use word::Word;

/// Per-group scales, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Scales<'a> {
    /// f32 scales.
    F32(&'a [f32]),
    /// f16 scales (converted to f32 once per call).
    F16(&'a [f16]),
}

impl Scales<'_> {
    fn len(&self) -> usize {
        match self {
            Scales::F32(s) => s.len(),
            Scales::F16(s) => s.len(),
        }
    }
}

/// A packed `[k, n]` weight `W` borrowed from its buffers (`moq-core`'s `Packed32` layout),
/// checked when built.
#[derive(Clone, Copy, Debug)]
pub struct PackedMatrix<'a, W: Word = u32> {
    shape: PackedShape,
    words: &'a [W],
    scales: Scales<'a>,
    zero_points: &'a [i32],
}

impl<'a, W: Word> PackedMatrix<'a, W> {
    /// Wraps the buffers of a weight of `shape`: `shape.words()` words, one scale per group and,
    /// for asymmetric grids, one stored zero point per group (symmetric grids ignore
    /// `zero_points`, which may be empty).
    pub fn new(
        shape: PackedShape,
        words: &'a [W],
        scales: Scales<'a>,
        zero_points: &'a [i32],
    ) -> Result<Self> {
        let zero_points = match shape.quant_type {
            QuantType::Asymmetric => zero_points,
            QuantType::Symmetric => &[],
        };
        shape.check_kernel()?;
        shape.check_parts(words.len(), scales.len(), zero_points.len())?;
        Ok(Self {
            shape,
            words,
            scales,
            zero_points,
        })
    }

    /// The weight's geometry.
    pub fn shape(&self) -> PackedShape {
        self.shape
    }
}

impl<'a> PackedMatrix<'a, u32> {
    /// A `Packed32` tensor as a `[len / row_len, row_len]` matrix.
    pub fn from_packed(p: &'a PackedTensor) -> Result<Self> {
        let PackedCodes::Words(words) = &p.codes else {
            return Err(MoqError::Packed {
                reason: "the CPU matmul reads Packed32 codes (convert with `to_layout`)".into(),
            });
        };
        let scales = match &p.scales {
            PackedScales::F32(s) => Scales::F32(s),
            PackedScales::F16(s) => Scales::F16(s),
        };
        Self::new(p.shape()?, words, scales, &p.zero_points)
    }
}

/// `y = x · dequant(W)` for `x` of `m = x.len() / k` rows (`[m, k]`, row-major) into `y`
/// (`[m, n]`), on the best instruction set of this CPU ([`Isa::best`]) and all of rayon's
/// threads. Errors name a length that does not fit the weight; nothing is written then.
pub fn matmul<W: Word>(x: &[f32], w: &PackedMatrix<W>, y: &mut [f32]) -> Result<()> {
    matmul_with(Isa::best(), x, w, y)
}

/// [`matmul`] on a chosen instruction set (an error if this CPU lacks it): for tests and
/// benchmarks that compare the paths.
pub fn matmul_with<W: Word>(isa: Isa, x: &[f32], w: &PackedMatrix<W>, y: &mut [f32]) -> Result<()> {
    let (k, n) = (w.shape.rows, w.shape.row_len);
    check_isa(isa)?;
    let m = rows_of(x.len(), y.len(), k, n)?;
    if k == 0 {
        y.fill(0.0);
        return Ok(());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let converted: Vec<f32>;
    let scales = match w.scales {
        Scales::F32(s) => s,
        Scales::F16(s) => {
            converted = s.iter().map(|v| v.to_f32()).collect();
            &converted
        }
    };
    let job = block::Job {
        x,
        m,
        words: w.words,
        words32: W::as_u32(w.words),
        words_per_row: w.shape.words_per_row(),
        group_len: w.shape.group_len(),
        scales,
        zero_points: w.zero_points,
        shape: w.shape,
    };
    let lanes = isa.lanes();
    let cols = lanes * w.shape.codes_per_word();
    let blocks = w.shape.words_per_row().div_ceil(lanes);
    // Tasks of whole column blocks, a few per thread so uneven ones even out.
    let per_task = blocks
        .div_ceil(rayon::current_num_threads())
        .max(1)
        .max(PAR_MIN_WORDS.div_ceil(k * lanes * m).min(blocks));
    let task = |t: usize| {
        let first = t * per_task;
        let count = per_task.min(blocks - first);
        let mut out = vec![0.0f32; m * count * cols];
        simd::matmul::blocks(isa, &job, first, count, &mut out);
        (first, out)
    };
    // A small weight runs on the calling thread: waking the pool costs more than it saves.
    let tasks: Vec<(usize, Vec<f32>)> = match blocks.div_ceil(per_task) {
        1 => vec![task(0)],
        count => (0..count).into_par_iter().map(task).collect(),
    };
    // Each task wrote `[count][m][cols]` in block-major order: copy its columns into `y`.
    for (first, out) in tasks {
        for (b, block) in out.chunks(m * cols).enumerate() {
            let c0 = (first + b) * cols;
            let width = cols.min(n - c0);
            for (r, row) in block.chunks(cols).enumerate() {
                y[r * n + c0..r * n + c0 + width].copy_from_slice(&row[..width]);
            }
        }
    }
    Ok(())
}

/// An error unless this CPU runs `isa`.
fn check_isa(isa: Isa) -> Result<()> {
    if isa.available() {
        return Ok(());
    }
    Err(MoqError::UnsupportedMode {
        tensor: "matmul".into(),
        reason: format!("this CPU does not support {isa:?}"),
    })
}

/// The rows `m` of an input of `x_len` elements in rows of `k`, checked against it and against
/// an output of `y_len` elements in rows of `n`.
fn rows_of(x_len: usize, y_len: usize, k: usize, n: usize) -> Result<usize> {
    let m = x_len.checked_div(k).unwrap_or(0);
    if x_len != m * k {
        return Err(MoqError::LengthMismatch {
            what: format!("matmul input x (rows of k = {k})"),
            expected: (m + 1) * k,
            found: x_len,
        });
    }
    if y_len != m * n {
        return Err(MoqError::LengthMismatch {
            what: format!("matmul output y ({m} rows of n = {n})"),
            expected: m * n,
            found: y_len,
        });
    }
    Ok(m)
}

/// Below this many words times rows of `x` (512 KiB of codes for one row) a task is not worth a
/// thread.
const PAR_MIN_WORDS: usize = 1 << 17;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{CodeLayout, ScaleFormat, pack, unpack};
    use crate::quantizer::{QuantSpec, dequantize, quantize};
    use crate::rng::Rng;

    /// `x · dequant(W)` in f64 from moq-core's own dequantization, with the bound on the
    /// rounding error of an f32 sum of the same products.
    fn reference(x: &[f32], p: &PackedTensor) -> (Vec<f64>, Vec<f64>) {
        let (k, n) = (p.len / p.row_len, p.row_len);
        let mut w = vec![0.0f32; p.len];
        dequantize(&unpack(p).unwrap(), &mut w).unwrap();
        let m = x.len() / k;
        let mut y = vec![0.0f64; m * n];
        let mut bound = vec![0.0f64; m * n];
        for r in 0..m {
            for i in 0..k {
                for c in 0..n {
                    let t = x[r * k + i] as f64 * w[i * n + c] as f64;
                    y[r * n + c] += t;
                    bound[r * n + c] += t.abs();
                }
            }
        }
        (y, bound)
    }

    fn check(isa: Isa, m: usize, k: usize, n: usize, spec: QuantSpec, scales: ScaleFormat) {
        let mut rng = Rng::new((m * 1000 + k * 10 + n) as u64 + spec.bits as u64);
        let w = rng.uniform_vec(k * n);
        let x = rng.uniform_vec(m * k);
        let q = quantize("w", &w, &spec).unwrap();
        let p = pack(&q, n, CodeLayout::Packed32, scales).unwrap();
        let mut y = vec![f32::NAN; m * n];
        matmul_with(isa, &x, &PackedMatrix::from_packed(&p).unwrap(), &mut y).unwrap();
        let (want, bound) = reference(&x, &p);
        for (i, ((&got, &want), &bound)) in y.iter().zip(&want).zip(&bound).enumerate() {
            assert!(
                (got as f64 - want).abs() <= 1e-5 * bound + 1e-6,
                "{isa:?} m {m} k {k} n {n} {spec:?}: y[{i}] = {got}, reference {want}"
            );
        }
    }

    fn isas() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }

    /// Every width and grid, odd shapes (rows not a multiple of the codes per word or of a
    /// block, groups straddling rows and blocks), one and several rows of `x`, on every
    /// instruction set this CPU has: the portable path included, whatever the CPU.
    #[test]
    fn every_width_and_shape_matches_the_reference_on_every_isa() {
        assert!(isas().contains(&Isa::Portable));
        for isa in isas() {
            for bits in 1..=8u32 {
                let types: &[QuantType] = if bits <= 2 {
                    &[QuantType::Symmetric]
                } else {
                    &[QuantType::Symmetric, QuantType::Asymmetric]
                };
                for &quant_type in types {
                    // (k, n, groups): whole blocks and uniform groups; a short last word and
                    // block; groups straddling rows; one group.
                    for (k, n, groups) in [(64, 256, 128), (33, 75, 11), (40, 150, 24), (7, 5, 1)] {
                        for m in [1, 2, 3, 5] {
                            let spec = QuantSpec::new(bits, quant_type, groups);
                            check(isa, m, k, n, spec, ScaleFormat::F32);
                        }
                    }
                }
            }
            check(
                isa,
                3,
                48,
                96,
                QuantSpec::new(4, QuantType::Asymmetric, 36),
                ScaleFormat::F16,
            );
        }
    }

    /// Enough work for several threads and scratch slices (k larger than one slice).
    #[test]
    fn large_shapes_split_over_threads_and_slices() {
        for isa in isas() {
            check(
                isa,
                1,
                1024,
                1100,
                QuantSpec::new(4, QuantType::Symmetric, 1100 * 8),
                ScaleFormat::F32,
            );
            check(
                isa,
                9,
                700,
                260,
                QuantSpec::new(8, QuantType::Asymmetric, 700),
                ScaleFormat::F32,
            );
        }
    }

    #[test]
    fn lengths_that_do_not_fit_are_named_and_nothing_is_written() {
        let q = quantize(
            "w",
            &[0.5f32; 32],
            &QuantSpec::new(4, QuantType::Symmetric, 2),
        )
        .unwrap();
        let p = pack(&q, 8, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
        let w = PackedMatrix::from_packed(&p).unwrap();
        let mut y = vec![7.0f32; 8];
        let err = matmul(&[1.0; 5], &w, &mut y).unwrap_err().to_string();
        assert!(
            err.contains("matmul input x") && err.contains("found 5"),
            "{err}"
        );
        let err = matmul(&[1.0; 8], &w, &mut y).unwrap_err().to_string();
        assert!(
            err.contains("matmul output y") && err.contains("expected 16"),
            "{err}"
        );
        assert_eq!(y, [7.0; 8]);
        let int8 = pack(&q, 8, CodeLayout::Int8, ScaleFormat::F32).unwrap();
        assert!(PackedMatrix::from_packed(&int8).is_err());
        let words = p.words().unwrap();
        let scales = [1.0f32; 3];
        assert!(PackedMatrix::new(p.shape().unwrap(), words, Scales::F32(&scales), &[]).is_err());
    }
}

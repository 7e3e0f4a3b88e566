//! One column block of `y = x · dequant(W)`: `L` consecutive packed words of every row of `W`
//! (`L` lanes of one vector), i.e. `L · PW` columns for `PW = 32 / b` codes per word.
//!
//! Accumulator vector `j` holds field `j` of every word: lane `l` is column `(w0 + l)·PW + j`.
//! A vector of `L` words shifted by the same amounts gives field `j` of every lane at once, so
//! decoding is two shifts and a conversion per `L` codes. Results go back to column order when
//! written.
//!
//! A block row whose columns all lie in one group (the common case: groups of 128 along rows
//! whose length is a multiple of the block) multiplies the codes by one `x·s` and adds
//! `−z·s·x` once; a row that straddles groups is dequantized element by element.

use std::ops::Range;

use super::Word;
use crate::config::QuantType;
use crate::layout::PackedShape;
use crate::simd::vector::{Vector, field_of, sign_bits};

/// What every block of one call reads.
pub(crate) struct Job<'a, W> {
    pub x: &'a [f32],
    pub m: usize,
    pub words: &'a [W],
    /// The same words as `u32`s, when they are 32-bit.
    pub words32: Option<&'a [u32]>,
    /// Words per row of `W`.
    pub words_per_row: usize,
    /// Elements per group.
    pub group_len: usize,
    pub scales: &'a [f32],
    pub zero_points: &'a [i32],
    pub shape: PackedShape,
}

/// Rows of `W` dequantized at a time for several rows of `x`: the scratch stays within 16 KiB.
const SCRATCH_BYTES: usize = 16 * 1024;

/// Most lanes of any vector.
const MAX_LANES: usize = 16;

/// Computes blocks `first..first + count` into `out` (`[count][m][L·PW]`, column order).
#[inline(always)]
pub(crate) fn blocks<V: Vector, W: Word>(
    job: &Job<W>,
    first: usize,
    count: usize,
    out: &mut [f32],
) {
    match job.shape.bits {
        1 => run::<V, 32, 1, W>(job, first, count, out),
        2 => run::<V, 16, 2, W>(job, first, count, out),
        3 => run::<V, 10, 3, W>(job, first, count, out),
        4 => run::<V, 8, 4, W>(job, first, count, out),
        5 => run::<V, 6, 5, W>(job, first, count, out),
        6 => run::<V, 5, 6, W>(job, first, count, out),
        7 => run::<V, 4, 7, W>(job, first, count, out),
        _ => run::<V, 4, 8, W>(job, first, count, out),
    }
}

#[inline(always)]
fn run<V: Vector, const PW: usize, const BITS: u32, W: Word>(
    job: &Job<W>,
    first: usize,
    count: usize,
    out: &mut [f32],
) {
    let blocks: Vec<Block> = (first..first + count)
        .map(|b| Block::new(job, b, V::LANES, PW))
        .collect();
    if job.m == 1 {
        gemv::<V, PW, BITS, W>(job, &blocks, out);
    } else {
        tiles::<V, PW, BITS, W>(job, &blocks, out);
    }
}

/// How the groups fall on a block's rows.
#[derive(Clone, Copy)]
enum Groups {
    /// Rows hold whole groups and the block lies in one: row `kk` is group `first + kk·per_row`.
    Uniform { first: usize, per_row: usize },
    /// A group holds `rows` whole rows: row `kk` is group `kk / rows`.
    WholeRows { rows: usize },
    /// Found row by row (a row may straddle groups).
    Mixed,
}

/// Where a block lies in each row of `W`.
struct Block {
    /// First word of the block within a row.
    w0: usize,
    /// Words of the block that exist (`L` but in the last block).
    words: usize,
    /// Columns `c0..c1` of `W` the block covers.
    c0: usize,
    c1: usize,
    groups: Groups,
}

impl Block {
    fn new<W>(job: &Job<W>, index: usize, lanes: usize, per_word: usize) -> Self {
        let (n, group_len) = (job.shape.row_len, job.shape.group_len());
        let w0 = index * lanes;
        let words = lanes.min(job.shape.words_per_row() - w0);
        let (c0, c1) = (w0 * per_word, n.min((w0 + words) * per_word));
        let groups = if n.is_multiple_of(group_len) && c0 / group_len == (c1 - 1) / group_len {
            Groups::Uniform {
                first: c0 / group_len,
                per_row: n / group_len,
            }
        } else if group_len.is_multiple_of(n) {
            Groups::WholeRows {
                rows: group_len / n,
            }
        } else {
            Groups::Mixed
        };
        Self {
            w0,
            words,
            c0,
            c1,
            groups,
        }
    }

    /// The group of row `kk` when all the block's columns in it share one.
    #[inline(always)]
    fn group<W>(&self, job: &Job<W>, kk: usize) -> Option<usize> {
        match self.groups {
            Groups::Uniform { first, per_row } => Some(first + kk * per_row),
            Groups::WholeRows { rows } => Some(kk / rows),
            Groups::Mixed => {
                let (n, group_len) = (job.shape.row_len, job.group_len);
                let g = (kk * n + self.c0) / group_len;
                ((kk * n + self.c1 - 1) / group_len == g).then_some(g)
            }
        }
    }

    /// The block's words of row `kk` as a vector, zero past the end of the row.
    #[inline(always)]
    fn words<V: Vector, W: Word>(&self, job: &Job<W>, kk: usize) -> V::W {
        let start = kk * job.words_per_row + self.w0;
        if let Some(words) = job.words32.filter(|_| self.words == V::LANES) {
            return V::words(&words[start..start + V::LANES]);
        }
        let mut buf = [0u32; MAX_LANES];
        for (v, w) in buf.iter_mut().zip(&job.words[start..start + self.words]) {
            *v = w.bits();
        }
        V::words(&buf[..V::LANES])
    }
}

#[inline(always)]
fn zero_of<W>(job: &Job<W>, g: usize) -> f32 {
    match job.shape.quant_type {
        QuantType::Asymmetric => job.zero_points[g] as f32,
        QuantType::Symmetric => 0.0,
    }
}

/// `value(col) · factor` added at each existing column of row `kk` of the block, element by
/// element, into `acc` (`[PW][MAX_LANES]`, lane order).
#[inline(always)]
fn add_each<const PW: usize, const BITS: u32, W: Word>(
    job: &Job<W>,
    block: &Block,
    kk: usize,
    factor: f32,
    acc: &mut [[f32; MAX_LANES]; PW],
) {
    let (n, group_len) = (job.shape.row_len, job.shape.group_len());
    let start = kk * job.shape.words_per_row() + block.w0;
    for (l, word) in job.words[start..start + block.words].iter().enumerate() {
        let word = word.bits();
        for (j, acc) in acc.iter_mut().enumerate() {
            let col = (block.w0 + l) * PW + j;
            if col < n {
                let g = (kk * n + col) / group_len;
                let code = field_of::<BITS>(word, j as u32);
                acc[l] += (code - zero_of(job, g)) * job.scales[g] * factor;
            }
        }
    }
}

#[inline(always)]
fn spill<V: Vector, const PW: usize>(acc: &[V::F; PW]) -> [[f32; MAX_LANES]; PW] {
    let mut out = [[0.0f32; MAX_LANES]; PW];
    for (o, &a) in out.iter_mut().zip(acc) {
        V::store(a, o);
    }
    out
}

/// Writes accumulators (lane order) plus `offset` into `out` in column order.
#[inline(always)]
fn write<V: Vector, const PW: usize>(acc: &[V::F; PW], offset: f32, width: usize, out: &mut [f32]) {
    for (j, acc) in spill::<V, PW>(acc).iter().enumerate() {
        for (l, &v) in acc.iter().enumerate().take(V::LANES) {
            let idx = l * PW + j;
            if idx < width {
                out[idx] = v + offset;
            }
        }
    }
}

/// Rows of `W` one pass over the blocks' accumulators applies (they are loaded and stored
/// once per pass).
const ROWS_PER_PASS: usize = 16;

/// One row of `x`. `W` is read row by row (each row's part of the task is contiguous, so the
/// hardware prefetches it, where walking one block down all rows would touch a new page per
/// row); the blocks' accumulators stay in L1 and `ROWS_PER_PASS` rows are applied to each at a
/// time.
#[inline(always)]
fn gemv<V: Vector, const PW: usize, const BITS: u32, W: Word>(
    job: &Job<W>,
    blocks: &[Block],
    out: &mut [f32],
) {
    let k = job.shape.rows;
    let mut acc = vec![[V::zero(); PW]; blocks.len()];
    let mut offset = vec![0.0f32; blocks.len()];
    for k0 in (0..k).step_by(ROWS_PER_PASS) {
        let rows = ROWS_PER_PASS.min(k - k0);
        for ((block, acc), offset) in blocks.iter().zip(&mut acc).zip(&mut offset) {
            let rows = k0..k0 + rows;
            match (block.groups, job.words32, block.words == V::LANES) {
                (Groups::Uniform { first, per_row }, Some(words), true) => {
                    uniform_rows::<V, PW, BITS, W>(
                        job,
                        block,
                        words,
                        (first, per_row),
                        rows,
                        acc,
                        offset,
                    )
                }
                _ => any_rows::<V, PW, BITS, W>(job, block, rows, acc, offset),
            }
        }
    }
    let cols = V::LANES * PW;
    for ((block, acc), (offset, out)) in blocks
        .iter()
        .zip(&acc)
        .zip(offset.iter().zip(out.chunks_mut(cols)))
    {
        write::<V, PW>(acc, *offset, block.c1 - block.c0, out);
    }
}

/// Rows `rows` of one block whose words fill a vector and whose block rows each lie in one
/// group (`first + kk · per_row`): the hot loop of the GEMV. A whole vector of words per row, no
/// call and no element-wise path, so the accumulators stay in registers.
#[inline(always)]
fn uniform_rows<V: Vector, const PW: usize, const BITS: u32, W: Word>(
    job: &Job<W>,
    block: &Block,
    words: &[u32],
    (first, per_row): (usize, usize),
    rows: Range<usize>,
    acc: &mut [V::F; PW],
    offset: &mut f32,
) {
    let (mut a, mut off) = (*acc, *offset);
    let asymmetric = job.shape.quant_type == QuantType::Asymmetric;
    // Codes read unsigned with their sign bit flipped are `c + 2^(b−1)`: the `2^(b−1)` is
    // taken off with the zero point (binary codes are read as is).
    let (flip, shift) = if BITS == 1 {
        (0, 0.0)
    } else {
        (sign_bits::<BITS>(), (1u32 << (BITS - 1)) as f32)
    };
    for kk in rows {
        let g = first + kk * per_row;
        let start = kk * job.words_per_row + block.w0;
        let wv = V::words(&words[start..start + V::LANES]);
        let s = job.x[kk] * job.scales[g];
        let z = if asymmetric {
            job.zero_points[g] as f32
        } else {
            0.0
        };
        off -= (z + shift) * s;
        let sv = V::splat(s);
        if BITS == 1 {
            for (j, a) in a.iter_mut().enumerate() {
                *a = V::mul_add(V::field::<BITS>(wv, j as u32), sv, *a);
            }
        } else {
            let wv = V::xor(wv, flip);
            for (j, a) in a.iter_mut().enumerate() {
                *a = V::mul_add(V::unsigned_field::<BITS>(wv, j as u32), sv, *a);
            }
        }
    }
    (*acc, *offset) = (a, off);
}

/// Rows `rows` of any block: a row in one group is decoded a vector at a time, a row that
/// straddles groups element by element.
#[inline(always)]
fn any_rows<V: Vector, const PW: usize, const BITS: u32, W: Word>(
    job: &Job<W>,
    block: &Block,
    rows: Range<usize>,
    acc: &mut [V::F; PW],
    offset: &mut f32,
) {
    for kk in rows {
        let xk = job.x[kk];
        match block.group(job, kk) {
            Some(g) => {
                let wv = block.words::<V, W>(job, kk);
                let s = xk * job.scales[g];
                *offset -= zero_of(job, g) * s;
                let sv = V::splat(s);
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = V::mul_add(V::field::<BITS>(wv, j as u32), sv, *a);
                }
            }
            None => {
                let mut lanes = spill::<V, PW>(acc);
                add_each::<PW, BITS, W>(job, block, kk, xk, &mut lanes);
                for (a, l) in acc.iter_mut().zip(&lanes) {
                    *a = V::load(l);
                }
            }
        }
    }
}

/// Several rows of `x`: for each slice of rows of `W`, every block's part of it is dequantized
/// into a scratch once, then every row of `x` is multiplied with it.
#[inline(always)]
fn tiles<V: Vector, const PW: usize, const BITS: u32, W: Word>(
    job: &Job<W>,
    blocks: &[Block],
    out: &mut [f32],
) {
    let (m, k) = (job.m, job.shape.rows);
    let kc = (SCRATCH_BYTES / (4 * V::LANES * PW)).max(1);
    let mut scratch = vec![[V::zero(); PW]; kc];
    // `[block][row of x]`.
    let mut acc = vec![[V::zero(); PW]; blocks.len() * m];
    for k0 in (0..k).step_by(kc) {
        let rows = kc.min(k - k0);
        for (block, acc) in blocks.iter().zip(acc.chunks_mut(m)) {
            for (r, dq) in scratch.iter_mut().enumerate().take(rows) {
                let kk = k0 + r;
                match block.group(job, kk) {
                    Some(g) => {
                        let wv = block.words::<V, W>(job, kk);
                        let (s, z) = (V::splat(job.scales[g]), V::splat(zero_of(job, g)));
                        for (j, dq) in dq.iter_mut().enumerate() {
                            *dq = V::mul(V::sub(V::field::<BITS>(wv, j as u32), z), s);
                        }
                    }
                    None => {
                        let mut lanes = [[0.0f32; MAX_LANES]; PW];
                        add_each::<PW, BITS, W>(job, block, kk, 1.0, &mut lanes);
                        for (d, l) in dq.iter_mut().zip(&lanes) {
                            *d = V::load(l);
                        }
                    }
                }
            }
            for (row, acc) in acc.iter_mut().enumerate() {
                let x = &job.x[row * k + k0..row * k + k0 + rows];
                let mut a = *acc;
                for (&xv, dq) in x.iter().zip(&scratch) {
                    let xv = V::splat(xv);
                    for (a, &d) in a.iter_mut().zip(dq) {
                        *a = V::mul_add(xv, d, *a);
                    }
                }
                *acc = a;
            }
        }
    }
    let cols = V::LANES * PW;
    for ((block, acc), out) in blocks
        .iter()
        .zip(acc.chunks(m))
        .zip(out.chunks_mut(m * cols))
    {
        for (acc, out) in acc.iter().zip(out.chunks_mut(cols)) {
            write::<V, PW>(acc, 0.0, block.c1 - block.c0, out);
        }
    }
}

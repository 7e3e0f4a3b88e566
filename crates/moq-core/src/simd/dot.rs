//! The integer-dot kernel of the int8-activation matmul (`matmul/int8`), one column tile at a
//! time: per block of 32 rows of `K`, the tile's codes times the block's int8 activations
//! summed in integers, then scaled by the block's activation scale. Two ways: AVX2
//! (`maddubs`: unsigned × signed bytes to 16-bit pairs, `madd` to 32-bit sums; AVX-512 CPUs run
//! it too) and plain integers (the portable path), chosen here at run time.
//!
//! Nibble codes are `u = c + 8` (0..15): `u · q` pairs stay below 2 · 15 · 127, so a whole
//! block (four steps of two) sums in 16 bits; the `+ 8` is taken off by the caller. Byte codes
//! are signed: `|c| · (q · sign c)` (the `sign` trick), at most 2 · 128 · 127 per pair.

use super::Isa;
use crate::matmul::int8::job::{BLOCK, DotJob, Lane, Storage, TILE};

/// `Σ_block t_block · Σ_k q_k · code_k` for each of tile `tile`'s 8 columns and each of `R`
/// rows of `x` (`lanes`, one per row): the tile's codes are loaded and unpacked once for all
/// `R`.
#[allow(unsafe_code)]
pub(crate) fn tile<const R: usize>(
    isa: Isa,
    job: &DotJob,
    tile: usize,
    lanes: [&Lane; R],
) -> [[f32; TILE]; R] {
    let bytes = job.storage.tile_bytes(job.k_pad);
    let codes = &job.codes[tile * bytes..(tile + 1) * bytes];
    let (k_pad, blocks) = (job.k_pad, job.k_pad / BLOCK);
    let q = lanes.map(|l| &l.q[..k_pad]);
    let t = lanes.map(|l| &l.t[..blocks]);
    match isa {
        Isa::Portable => std::array::from_fn(|r| portable(job.storage, codes, q[r], t[r])),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked `isa.available()`, and every AVX-512 CPU has AVX2.
        Isa::Avx2 | Isa::Avx512 => unsafe { avx2(job.storage, codes, q, t) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => std::array::from_fn(|r| portable(job.storage, codes, q[r], t[r])),
    }
}

/// The portable kernel: the same sums in plain integers.
fn portable(storage: Storage, codes: &[u8], q: &[i8], t: &[f32]) -> [f32; TILE] {
    let mut out = [0.0f32; TILE];
    let per_block = storage.tile_bytes(BLOCK);
    for ((block, q), &t) in codes
        .chunks_exact(per_block)
        .zip(q.chunks_exact(BLOCK))
        .zip(t)
    {
        let mut acc = [0i32; TILE];
        match storage {
            Storage::Nibbles => {
                for (step, q) in block.chunks_exact(32).zip(q.chunks_exact(8)) {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        for r in 0..4 {
                            let b = step[4 * j + r];
                            *acc +=
                                (b & 15) as i32 * q[r] as i32 + (b >> 4) as i32 * q[4 + r] as i32;
                        }
                    }
                }
            }
            Storage::Bytes => {
                for (step, q) in block.chunks_exact(32).zip(q.chunks_exact(4)) {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        for r in 0..4 {
                            *acc += step[4 * j + r] as i8 as i32 * q[r] as i32;
                        }
                    }
                }
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o += a as f32 * t;
        }
    }
    out
}

/// The AVX2 kernel for `R` rows: per step the codes are loaded and unpacked once, and each
/// row's broadcast activations multiply them into that row's sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
fn avx2<const R: usize>(
    storage: Storage,
    codes: &[u8],
    q: [&[i8]; R],
    t: [&[f32]; R],
) -> [[f32; TILE]; R] {
    use std::arch::x86_64::*;
    // The loads read 32 bytes of `codes` through chunks of exactly 32 bytes (`chunks_exact`),
    // so every pointer below is in bounds.
    let load = |s: &[u8]| unsafe { _mm256_loadu_si256(s.as_ptr().cast()) };
    let splat4 = |q: &[i8]| {
        _mm256_set1_epi32(i32::from_le_bytes([
            q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8,
        ]))
    };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let per_block = storage.tile_bytes(BLOCK);
    for (b, block) in codes.chunks_exact(per_block).enumerate() {
        let k0 = b * BLOCK;
        let mut sums = [_mm256_setzero_si256(); R];
        match storage {
            Storage::Nibbles => {
                let mask = _mm256_set1_epi8(0x0f);
                let mut pairs = [_mm256_setzero_si256(); R];
                for (s, step) in block.chunks_exact(32).enumerate() {
                    let v = load(step);
                    let lo = _mm256_and_si256(v, mask);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
                    let k = k0 + 8 * s;
                    for (p, q) in pairs.iter_mut().zip(q) {
                        let lo = _mm256_maddubs_epi16(lo, splat4(&q[k..k + 4]));
                        let hi = _mm256_maddubs_epi16(hi, splat4(&q[k + 4..k + 8]));
                        *p = _mm256_add_epi16(*p, _mm256_add_epi16(lo, hi));
                    }
                }
                for (s, p) in sums.iter_mut().zip(pairs) {
                    *s = _mm256_madd_epi16(p, ones);
                }
            }
            Storage::Bytes => {
                for (s, step) in block.chunks_exact(32).enumerate() {
                    let v = load(step);
                    let abs = _mm256_abs_epi8(v);
                    let k = k0 + 4 * s;
                    for (sum, q) in sums.iter_mut().zip(q) {
                        let pairs =
                            _mm256_maddubs_epi16(abs, _mm256_sign_epi8(splat4(&q[k..k + 4]), v));
                        *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
        }
        for ((acc, sum), t) in acc.iter_mut().zip(sums).zip(t) {
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(t[b]), *acc);
        }
    }
    acc.map(|a| {
        let mut out = [0.0f32; TILE];
        // SAFETY: `out` holds 8 f32s.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), a) };
        out
    })
}

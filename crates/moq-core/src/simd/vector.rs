//! The vector operations the block code needs, three ways: AVX-512 (16 lanes), AVX2 + FMA
//! (8 lanes) and plain arrays (8 lanes, which LLVM lowers to the baseline target's SIMD). The
//! block code (`matmul/block.rs`) is written once over [`Vector`]; `simd/matmul.rs` picks the
//! implementation at run time.

/// One vector of `LANES` f32 values and one of `LANES` u32 words.
pub(crate) trait Vector: Copy {
    /// Lanes per vector.
    const LANES: usize;
    /// `LANES` f32 values.
    type F: Copy;
    /// `LANES` u32 words.
    type W: Copy;

    fn zero() -> Self::F;
    fn splat(x: f32) -> Self::F;
    /// The first `LANES` values of `src`.
    fn load(src: &[f32]) -> Self::F;
    fn store(v: Self::F, dst: &mut [f32]);
    fn words(src: &[u32]) -> Self::W;
    /// `a · b + c`.
    fn mul_add(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    fn sub(a: Self::F, b: Self::F) -> Self::F;
    fn mul(a: Self::F, b: Self::F) -> Self::F;
    /// Field `j` of every word as its signed code (binary: bit 1 is +1, bit 0 is −1).
    fn field<const BITS: u32>(w: Self::W, j: u32) -> Self::F;
    /// `w XOR pattern` for every word.
    fn xor(w: Self::W, pattern: u32) -> Self::W;
    /// Field `j` of every word as an unsigned number (`BITS ≥ 2`): one shift and one mask.
    fn unsigned_field<const BITS: u32>(w: Self::W, j: u32) -> Self::F;
}

/// The bit pattern that flips the sign bit of every `BITS`-bit field of a word: a field `c`
/// (two's complement) XOR its sign bit, read unsigned, is `c + 2^(BITS−1)`, so a signed code is
/// one shift, one mask and a constant offset away.
pub(crate) const fn sign_bits<const BITS: u32>() -> u32 {
    let mut pattern = 0u32;
    let mut j = 0;
    while (j + 1) * BITS <= 32 {
        pattern |= 1 << (j * BITS + BITS - 1);
        j += 1;
    }
    pattern
}

/// Field `j` of `word` as a signed code: the field shifted to the top, then arithmetic-shifted
/// back (sign extension); binary fields map 1 to +1 and 0 to −1.
#[inline(always)]
pub(crate) fn field_of<const BITS: u32>(word: u32, j: u32) -> f32 {
    if BITS == 1 {
        (((word >> j) & 1) as i32 * 2 - 1) as f32
    } else {
        ((word << (32 - (j + 1) * BITS)) as i32 >> (32 - BITS)) as f32
    }
}

/// Plain arrays: portable, vectorised by LLVM as far as the baseline allows.
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl Vector for Portable {
    const LANES: usize = 8;
    type F = [f32; 8];
    type W = [u32; 8];

    #[inline(always)]
    fn zero() -> Self::F {
        [0.0; 8]
    }

    #[inline(always)]
    fn splat(x: f32) -> Self::F {
        [x; 8]
    }

    #[inline(always)]
    fn load(src: &[f32]) -> Self::F {
        let mut v = [0.0; 8];
        v.copy_from_slice(&src[..8]);
        v
    }

    #[inline(always)]
    fn store(v: Self::F, dst: &mut [f32]) {
        dst[..8].copy_from_slice(&v);
    }

    #[inline(always)]
    fn words(src: &[u32]) -> Self::W {
        let mut v = [0; 8];
        v.copy_from_slice(&src[..8]);
        v
    }

    #[inline(always)]
    fn mul_add(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        std::array::from_fn(|l| a[l] * b[l] + c[l])
    }

    #[inline(always)]
    fn sub(a: Self::F, b: Self::F) -> Self::F {
        std::array::from_fn(|l| a[l] - b[l])
    }

    #[inline(always)]
    fn mul(a: Self::F, b: Self::F) -> Self::F {
        std::array::from_fn(|l| a[l] * b[l])
    }

    #[inline(always)]
    fn field<const BITS: u32>(w: Self::W, j: u32) -> Self::F {
        std::array::from_fn(|l| field_of::<BITS>(w[l], j))
    }

    #[inline(always)]
    fn xor(w: Self::W, pattern: u32) -> Self::W {
        w.map(|w| w ^ pattern)
    }

    #[inline(always)]
    fn unsigned_field<const BITS: u32>(w: Self::W, j: u32) -> Self::F {
        w.map(|w| ((w >> (j * BITS)) & ((1 << BITS) - 1)) as f32)
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    //! SAFETY, for every function here: they are only reached through `simd`'s functions
    //! compiled with `avx2,fma` (for [`Avx2`]) or `avx512f,avx512bw,avx512vl` (for [`Avx512`]),
    //! which `matmul_with` calls only when the CPU has those features; the loads and stores
    //! read and write `LANES` elements of slices checked to hold them (`src[..LANES]`).

    use std::arch::x86_64::*;

    use super::Vector;

    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    impl Vector for Avx2 {
        const LANES: usize = 8;
        type F = __m256;
        type W = __m256i;

        #[inline(always)]
        fn zero() -> Self::F {
            unsafe { _mm256_setzero_ps() }
        }

        #[inline(always)]
        fn splat(x: f32) -> Self::F {
            unsafe { _mm256_set1_ps(x) }
        }

        #[inline(always)]
        fn load(src: &[f32]) -> Self::F {
            let src = &src[..8];
            unsafe { _mm256_loadu_ps(src.as_ptr()) }
        }

        #[inline(always)]
        fn store(v: Self::F, dst: &mut [f32]) {
            let dst = &mut dst[..8];
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
        }

        #[inline(always)]
        fn words(src: &[u32]) -> Self::W {
            let src = &src[..8];
            unsafe { _mm256_loadu_si256(src.as_ptr().cast()) }
        }

        #[inline(always)]
        fn mul_add(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }

        #[inline(always)]
        fn sub(a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm256_sub_ps(a, b) }
        }

        #[inline(always)]
        fn mul(a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm256_mul_ps(a, b) }
        }

        #[inline(always)]
        fn field<const BITS: u32>(w: Self::W, j: u32) -> Self::F {
            unsafe {
                if BITS == 1 {
                    let bit = _mm256_and_si256(
                        _mm256_srlv_epi32(w, _mm256_set1_epi32(j as i32)),
                        _mm256_set1_epi32(1),
                    );
                    let one = _mm256_set1_ps(1.0);
                    _mm256_fmsub_ps(_mm256_cvtepi32_ps(bit), _mm256_set1_ps(2.0), one)
                } else {
                    let up = _mm256_set1_epi32((32 - (j + 1) * BITS) as i32);
                    let down = _mm256_set1_epi32((32 - BITS) as i32);
                    _mm256_cvtepi32_ps(_mm256_srav_epi32(_mm256_sllv_epi32(w, up), down))
                }
            }
        }

        #[inline(always)]
        fn xor(w: Self::W, pattern: u32) -> Self::W {
            unsafe { _mm256_xor_si256(w, _mm256_set1_epi32(pattern as i32)) }
        }

        #[inline(always)]
        fn unsigned_field<const BITS: u32>(w: Self::W, j: u32) -> Self::F {
            unsafe {
                let shifted = _mm256_srlv_epi32(w, _mm256_set1_epi32((j * BITS) as i32));
                let field = if (j + 1) * BITS == 32 {
                    shifted
                } else {
                    _mm256_and_si256(shifted, _mm256_set1_epi32((1 << BITS) - 1))
                };
                _mm256_cvtepi32_ps(field)
            }
        }
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    impl Vector for Avx512 {
        const LANES: usize = 16;
        type F = __m512;
        type W = __m512i;

        #[inline(always)]
        fn zero() -> Self::F {
            unsafe { _mm512_setzero_ps() }
        }

        #[inline(always)]
        fn splat(x: f32) -> Self::F {
            unsafe { _mm512_set1_ps(x) }
        }

        #[inline(always)]
        fn load(src: &[f32]) -> Self::F {
            let src = &src[..16];
            unsafe { _mm512_loadu_ps(src.as_ptr()) }
        }

        #[inline(always)]
        fn store(v: Self::F, dst: &mut [f32]) {
            let dst = &mut dst[..16];
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) }
        }

        #[inline(always)]
        fn words(src: &[u32]) -> Self::W {
            let src = &src[..16];
            unsafe { _mm512_loadu_si512(src.as_ptr().cast()) }
        }

        #[inline(always)]
        fn mul_add(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }

        #[inline(always)]
        fn sub(a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm512_sub_ps(a, b) }
        }

        #[inline(always)]
        fn mul(a: Self::F, b: Self::F) -> Self::F {
            unsafe { _mm512_mul_ps(a, b) }
        }

        #[inline(always)]
        fn field<const BITS: u32>(w: Self::W, j: u32) -> Self::F {
            unsafe {
                if BITS == 1 {
                    let bit = _mm512_and_si512(
                        _mm512_srlv_epi32(w, _mm512_set1_epi32(j as i32)),
                        _mm512_set1_epi32(1),
                    );
                    let one = _mm512_set1_ps(1.0);
                    _mm512_fmsub_ps(_mm512_cvtepi32_ps(bit), _mm512_set1_ps(2.0), one)
                } else {
                    let up = _mm512_set1_epi32((32 - (j + 1) * BITS) as i32);
                    let down = _mm512_set1_epi32((32 - BITS) as i32);
                    _mm512_cvtepi32_ps(_mm512_srav_epi32(_mm512_sllv_epi32(w, up), down))
                }
            }
        }

        #[inline(always)]
        fn xor(w: Self::W, pattern: u32) -> Self::W {
            unsafe { _mm512_xor_si512(w, _mm512_set1_epi32(pattern as i32)) }
        }

        #[inline(always)]
        fn unsigned_field<const BITS: u32>(w: Self::W, j: u32) -> Self::F {
            unsafe {
                let shifted = _mm512_srlv_epi32(w, _mm512_set1_epi32((j * BITS) as i32));
                let field = if (j + 1) * BITS == 32 {
                    shifted
                } else {
                    _mm512_and_si512(shifted, _mm512_set1_epi32((1 << BITS) - 1))
                };
                _mm512_cvtepi32_ps(field)
            }
        }
    }
}

//! Runtime instruction-set dispatch of the CPU matmul: the block code of `matmul/block.rs`
//! instantiated with each `vector` implementation (AVX-512, AVX2 + FMA, plain arrays), each compiled inside a function
//! with its target features enabled, the widest this CPU has chosen when called.

use super::Isa;
use super::vector::Portable;
#[cfg(target_arch = "x86_64")]
use super::vector::{Avx2, Avx512};
use crate::matmul::Word;
use crate::matmul::block::{self, Job};

impl Isa {
    /// Words per column block (lanes of one vector of `u32`).
    pub(crate) fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Portable | Isa::Avx2 => 8,
        }
    }
}

/// Blocks `first..first + count` of `job` into `out` on `isa` (checked available by the caller).
/// The crate's one `unsafe`: calling code compiled for instructions found at run time.
#[allow(unsafe_code)]
pub(crate) fn blocks<W: Word>(isa: Isa, job: &Job<W>, first: usize, count: usize, out: &mut [f32]) {
    match isa {
        Isa::Portable => block::blocks::<Portable, W>(job, first, count, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` refuses an `isa` that `Isa::available` says this CPU lacks, so
        // the instructions these functions are compiled with exist.
        Isa::Avx2 => unsafe { avx2::<W>(job, first, count, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx512 => unsafe { avx512::<W>(job, first, count, out) },
        #[cfg(not(target_arch = "x86_64"))]
        _ => block::blocks::<Portable, W>(job, first, count, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2<W: Word>(job: &Job<W>, first: usize, count: usize, out: &mut [f32]) {
    block::blocks::<Avx2, W>(job, first, count, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
fn avx512<W: Word>(job: &Job<W>, first: usize, count: usize, out: &mut [f32]) {
    block::blocks::<Avx512, W>(job, first, count, out)
}

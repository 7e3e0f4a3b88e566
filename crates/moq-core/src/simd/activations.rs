//! The int8-activation matmul's activation quantization (`matmul/int8/activations.rs`: one
//! row of `x` times a lane's scales, rounded to int8 per block of 32), compiled per instruction
//! set: the loop is `#[inline(always)]`, so the AVX2 wrapper compiles it with 8 f32 lanes
//! where the baseline has 4. Exact IEEE operations only (no FMA contraction: Rust never
//! contracts), so every instruction set gives the same bits.

use super::Isa;
use crate::matmul::int8::activations::{LaneInput, quantize_lane};

/// [`quantize_lane`] on `isa` (AVX-512 CPUs run the AVX2 code).
#[allow(unsafe_code)]
pub(crate) fn lane(isa: Isa, input: &LaneInput, q: &mut [i8], t: &mut [f32]) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked `isa.available()`, and every AVX-512 CPU has AVX2.
        Isa::Avx2 | Isa::Avx512 => unsafe { avx2(input, q, t) },
        _ => quantize_lane(input, q, t),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2(input: &LaneInput, q: &mut [i8], t: &mut [f32]) -> f32 {
    quantize_lane(input, q, t)
}

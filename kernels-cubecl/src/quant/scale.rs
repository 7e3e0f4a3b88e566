//! The grid arithmetic of the kernels, as `moq-core` does it: the noise of stochastic rounding,
//! the finiteness test, and the search for a scale that reproduces itself.

use cubecl::prelude::*;

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
pub(crate) fn noise_offset(i: u32, k0: u32, k1: u32) -> f32 {
    let h = mix32(mix32(i ^ k0) ^ k1);
    (f32::cast_from(h >> 8) + 0.5) * (1.0 / 16_777_216.0) - 0.5
}

#[cube]
pub(crate) fn is_non_finite(x: f32) -> bool {
    (u32::reinterpret(x) & 0x7f80_0000) == 0x7f80_0000
}

#[cube]
pub(crate) fn next_float(s: f32, up: bool) -> f32 {
    let bits = u32::reinterpret(s);
    if up {
        f32::reinterpret(bits + 1)
    } else {
        f32::reinterpret(bits - 1)
    }
}

#[cube]
pub(crate) fn inverse_or_zero(s: f32) -> f32 {
    if s == 0.0 { f32::new(0.0) } else { 1.0 / s }
}

/// Whether a symmetric scale reproduces itself (`moq-core`'s `linear_grid`).
#[cube]
pub(crate) fn symmetric_ok(s: f32, m: f32, qmax: f32) -> bool {
    (qmax * s) / qmax == s && f32::round(m * inverse_or_zero(s)) >= qmax
}

#[cube]
pub(crate) fn zero_of(s: f32, min: f32) -> f32 {
    if s == 0.0 {
        f32::new(0.0)
    } else {
        f32::clamp(f32::round(-min / s), -1_073_741_824.0, 1_073_741_824.0)
    }
}

/// `(max − min) / n` rounded once, as the reference computes it in f64: the difference's
/// rounding error (TwoSum) and the quotient's remainder (fma) correct the f32 quotient.
#[cube]
pub(crate) fn range_scale(min: f32, max: f32, n: f32) -> f32 {
    let d = max - min;
    let bb = d - max;
    let e = (max - (d - bb)) + (-min - bb);
    let q = d / n;
    let r = fma(-q, n, d) + e;
    q + r / n
}

/// Whether an asymmetric scale reproduces itself (`moq-core`'s `linear_grid`).
#[cube]
pub(crate) fn asymmetric_ok(s: f32, min: f32, max: f32, n: f32) -> bool {
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
pub(crate) fn stable_scale(
    s0: f32,
    min: f32,
    max: f32,
    n: f32,
    #[comptime] symmetric: bool,
) -> f32 {
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

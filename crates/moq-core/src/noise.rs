//! The counter-based generator behind stochastic rounding.
//!
//! The rounding offset of element `i` depends only on `(seed, step, stream, i)`, never on the
//! order elements are visited in, so results are reproducible and the same on any number of
//! threads, and a GPU kernel can compute the same offsets independently per element. Only
//! 32-bit integer arithmetic is used per element, because WGSL has no 64-bit integers.
//!
//! The exact recipe (kernels must match it bit for bit):
//! ```text
//! mix(x)  = x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
//! k0      = mix(seed_lo ^ mix(seed_hi ^ mix(step_lo ^ mix(step_hi ^ mix(stream_lo ^ mix(stream_hi))))))
//! k1      = mix(k0 ^ 0x9e3779b9)
//! h(i)    = mix(mix(i_lo ^ k0) ^ (i_hi * 0x9e3779b9) ^ k1)
//! r(i)    = ((h(i) >> 8) + 0.5) · 2^-24 − 0.5          in (−0.5, 0.5), exactly in f32
//! ```
//! `mix` is Chris Wellons' `lowbias32` (a bijection with low avalanche bias).

use serde::{Deserialize, Serialize};

/// Identifies one stream of rounding offsets: the user's seed, the optimizer step and a
/// per-tensor stream number (so two parameters quantized at the same step get different noise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NoiseKey {
    /// The run's seed.
    pub seed: u64,
    /// The optimizer step.
    pub step: u64,
    /// The tensor's stream number (for example its parameter index).
    pub stream: u64,
}

/// `lowbias32`.
#[inline(always)]
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

const GOLDEN: u32 = 0x9e37_79b9;

/// The two 32-bit keys derived from a [`NoiseKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseKeys {
    /// First key, xored with the low half of the index.
    pub k0: u32,
    /// Second key, xored after the first mix.
    pub k1: u32,
}

impl NoiseKey {
    /// Derives the per-element keys.
    pub fn keys(&self) -> NoiseKeys {
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        let mut k = mix32(hi(self.stream));
        k = mix32(lo(self.stream) ^ k);
        k = mix32(hi(self.step) ^ k);
        k = mix32(lo(self.step) ^ k);
        k = mix32(hi(self.seed) ^ k);
        let k0 = mix32(lo(self.seed) ^ k);
        NoiseKeys {
            k0,
            k1: mix32(k0 ^ GOLDEN),
        }
    }
}

impl NoiseKeys {
    /// The rounding offset of element `index`, uniform in the open interval (−0.5, 0.5).
    #[inline(always)]
    pub fn offset(&self, index: u64) -> f32 {
        let h = mix32(
            mix32(index as u32 ^ self.k0) ^ ((index >> 32) as u32).wrapping_mul(GOLDEN) ^ self.k1,
        );
        ((h >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0) - 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_open_interval_and_roughly_uniform() {
        let keys = NoiseKey {
            seed: 7,
            step: 3,
            stream: 1,
        }
        .keys();
        let n = 200_000u64;
        let mut sum = 0.0f64;
        let mut buckets = [0u32; 10];
        for i in 0..n {
            let r = keys.offset(i);
            assert!(r > -0.5 && r < 0.5);
            sum += r as f64;
            buckets[((r + 0.5) * 10.0) as usize] += 1;
        }
        assert!((sum / n as f64).abs() < 3e-3, "mean {}", sum / n as f64);
        for b in buckets {
            assert!(
                (b as f64 - n as f64 / 10.0).abs() < 0.03 * n as f64 / 10.0,
                "{buckets:?}"
            );
        }
    }

    #[test]
    fn keys_separate_streams() {
        let a = NoiseKey {
            seed: 1,
            step: 2,
            stream: 3,
        }
        .keys();
        for other in [
            NoiseKey {
                seed: 2,
                step: 2,
                stream: 3,
            },
            NoiseKey {
                seed: 1,
                step: 3,
                stream: 3,
            },
            NoiseKey {
                seed: 1,
                step: 2,
                stream: 4,
            },
            NoiseKey {
                seed: 1 << 32,
                step: 2,
                stream: 3,
            },
        ] {
            let b = other.keys();
            let same = (0..1000).filter(|&i| a.offset(i) == b.offset(i)).count();
            assert!(same < 5, "{other:?}: {same}");
        }
        // High index bits matter too.
        assert_ne!(a.offset(5), a.offset(5 + (1 << 32)));
    }
}

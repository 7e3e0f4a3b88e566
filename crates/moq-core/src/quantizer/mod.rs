//! The group-wise quantizer (the guide's algorithm page (docs/algorithm.md), "Quantizer"), on slices of f32, f16 and bf16.
//!
//! A tensor's values, flattened row-major, are split into `groups` equal contiguous groups;
//! each group gets its own grid:
//! - symmetric, b ≥ 3: `s = max|x| / (2^(b−1) − 1)`, `q = clamp(round(x/s + r), ±(2^(b−1) − 1))`,
//!   value `q·s`;
//! - asymmetric, b ≥ 3: `s = (max − min) / (2^b − 1)`, `z = round(−min/s)`,
//!   `q = clamp(round(x/s + r) + z, 0, 2^b − 1)`, value `(q − z)·s`;
//! - ternary (b = 2): `Δ = 0.7·mean|x|`, `α = mean{|x| : |x| > Δ}`, values `+α`, `0`, `−α`;
//! - binary (b = 1): `α = mean|x|`, values `±α` (`x ≥ 0` gives `+α`, so 0 maps to `+α`: a 1-bit
//!   code has no room for a third value).
//!
//! Rounding is to nearest, ties to even (`r = 0`, as `torch.round` and GPU `rint`), or stochastic
//! (`r` from [`crate::noise`]). A group whose values are all equal comes out exactly as it went
//! in. Non-finite input is an error naming the tensor and the element; nothing is written.
//!
//! Fake quantization ([`fake_quantize`]) and real quantization ([`quantize`]) run the same
//! per-element code, so [`dequantize`] of the codes gives exactly the fake-quantized values.
//!
//! Two refinements beyond the formulas, both invisible at the scale of one grid step:
//! - the scale is nudged by at most 64 ulps to a value that reproduces itself when the
//!   quantized group is quantized again, so `Q(Q(x)) = Q(x)` holds exactly in f32 for symmetric,
//!   ternary and binary grids. For asymmetric grids requantizing always gives the same codes and
//!   zero points, but the scale is recomputed from `(q − z)·s` values that f32 has rounded, and
//!   for some groups no scale within reach reproduces itself: then the values move by an ulp of
//!   the scale per code step (seen in about 0.5% of 12- and 16-bit groups that lie on one side
//!   of zero, never in groups that straddle it);
//! - the zero point is clamped to ±2^30 (reached only by groups whose values are a few ulps
//!   apart, far from zero).
//!
//! Large tensors are processed on all of rayon's threads, in fixed chunks whose partial results
//! are combined in order, so results do not depend on the number of threads.
//!
//! ```
//! use moq_core::{QuantSpec, QuantType, fake_quantize_in_place};
//! let mut w = vec![0.10f32, -0.52, 0.33, 1.00, 0.0, 0.25, -0.75, 0.5];
//! fake_quantize_in_place("w", &mut w, &QuantSpec::new(3, QuantType::Symmetric, 2)).unwrap();
//! // Group 0 has max|x| = 1, so s = 1/3; group 1 has max|x| = 0.75, so s = 0.25.
//! assert_eq!(w, [0.0, -2.0 / 3.0, 1.0 / 3.0, 1.0, 0.0, 0.25, -0.75, 0.5]);
//! ```

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{MAX_BITS, QuantType, QuantizeConfig, Rounding};
use crate::error::{MoqError, Result};
use crate::noise::NoiseKey;

pub(crate) mod apply;
mod chunks;
pub(crate) mod element;
pub(crate) mod grid;

use crate::simd::quantize::apply_each_best;
use apply::Grid;
use apply::{Codes, InPlace, Values};
use chunks::{PARALLEL_MIN, parts, run, split_mut};
pub use element::Element;
use grid::find_grids;

/// How to quantize one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantSpec {
    /// Bit width, 1..=16.
    pub bits: u32,
    /// Symmetric or asymmetric (1 and 2 bits are symmetric only).
    pub quant_type: QuantType,
    /// Number of equal contiguous groups, each with its own scale.
    pub groups: usize,
    /// Nearest or stochastic (1 and 2 bits are nearest only).
    pub rounding: Rounding,
    /// Keys the stochastic offsets; unused with nearest rounding.
    pub noise: NoiseKey,
}

impl QuantSpec {
    /// Nearest rounding with the given width, type and groups.
    pub fn new(bits: u32, quant_type: QuantType, groups: usize) -> Self {
        Self {
            bits,
            quant_type,
            groups,
            rounding: Rounding::Nearest,
            noise: NoiseKey::default(),
        }
    }

    /// The config's type, groups and rounding at `bits`.
    pub fn from_config(config: &QuantizeConfig, bits: u32) -> Self {
        Self {
            rounding: config.rounding,
            ..Self::new(bits, config.quant_type, config.groups)
        }
    }

    /// Stochastic rounding keyed by `noise`.
    pub fn stochastic(self, noise: NoiseKey) -> Self {
        Self {
            rounding: Rounding::Stochastic,
            noise,
            ..self
        }
    }

    /// Checks that this spec can quantize a tensor of `len` elements named `tensor` (bit width,
    /// type and rounding go together; the groups divide the length), and returns the group
    /// length. Call it when a tensor is first registered, so a bad group count is an error at
    /// setup rather than at the first quantizing step.
    pub fn check(&self, tensor: &str, len: usize) -> Result<usize> {
        let unsupported = |reason: String| MoqError::UnsupportedMode {
            tensor: tensor.to_string(),
            reason,
        };
        if !(1..=MAX_BITS).contains(&self.bits) {
            return Err(unsupported(format!("{} bits is outside 1..=16", self.bits)));
        }
        if self.bits <= 2 && self.quant_type == QuantType::Asymmetric {
            return Err(unsupported(format!(
                "{}-bit quantization is symmetric only",
                self.bits
            )));
        }
        if self.bits <= 2 && self.rounding == Rounding::Stochastic {
            return Err(unsupported(format!(
                "{}-bit quantization rounds to nearest only",
                self.bits
            )));
        }
        if self.groups == 0 || !len.is_multiple_of(self.groups) {
            return Err(MoqError::InvalidGroups {
                tensor: tensor.to_string(),
                len,
                groups: self.groups,
            });
        }
        Ok(len / self.groups)
    }
}

/// Integer codes and per-group scales (and zero points) of one tensor: the real quantization.
/// Element `i` of group `g` is `(codes[i] − zero_points[g]) · scales[g]`, with zero points all 0
/// (and `zero_points` empty) for symmetric grids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizedTensor {
    /// Bit width the codes fit in.
    pub bits: u32,
    /// Grid type.
    pub quant_type: QuantType,
    /// Number of groups.
    pub groups: usize,
    /// Codes, one per element: symmetric in `±(2^(b−1) − 1)` (ternary `{−1, 0, 1}`, binary
    /// `{−1, 1}`), asymmetric in `0..=2^b − 1`.
    pub codes: Vec<i32>,
    /// One scale per group.
    pub scales: Vec<f32>,
    /// One zero point per group (asymmetric only).
    pub zero_points: Vec<i32>,
}

impl QuantizedTensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The zero point of group `g` (0 for symmetric grids).
    pub fn zero_point(&self, g: usize) -> i32 {
        self.zero_points.get(g).copied().unwrap_or(0)
    }
}

/// Fake-quantizes `input` into `output` (values back in the input type).
pub fn fake_quantize<T: Element>(
    tensor: &str,
    input: &[T],
    output: &mut [T],
    spec: &QuantSpec,
) -> Result<()> {
    fake_quantize_mixed(tensor, input, output, spec, 0.0)
}

/// Fake-quantizes `data` in place.
pub fn fake_quantize_in_place<T: Element>(
    tensor: &str,
    data: &mut [T],
    spec: &QuantSpec,
) -> Result<()> {
    let grids = find_grids(tensor, data, spec)?;
    let keys = spec.noise.keys();
    let mut pieces = split_mut(data, &grids.items);
    run(&grids.items, &mut pieces, |item, piece| {
        let work = parts(*item, grids.group_len, piece)
            .map(|(start, _, group, data)| (grids.grids[group], InPlace { start, data }));
        apply_each_best(spec.rounding, keys, work);
    });
    Ok(())
}

/// Fake-quantizes with mixing: `output = ρ·x + (1−ρ)·Q(x)`, `ρ` = `mix_ratio` in [0, 1]
/// (`fp16_mixed_quantize`; 0 is plain fake quantization).
pub fn fake_quantize_mixed<T: Element>(
    tensor: &str,
    input: &[T],
    output: &mut [T],
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<()> {
    if output.len() != input.len() {
        return Err(MoqError::LengthMismatch {
            what: format!("output of tensor `{tensor}`"),
            expected: input.len(),
            found: output.len(),
        });
    }
    if !(0.0..=1.0).contains(&mix_ratio) {
        return Err(MoqError::UnsupportedMode {
            tensor: tensor.to_string(),
            reason: format!("mixing ratio {mix_ratio} is not in [0, 1]"),
        });
    }
    let grids = find_grids(tensor, input, spec)?;
    let keys = spec.noise.keys();
    let mut pieces = split_mut(output, &grids.items);
    run(&grids.items, &mut pieces, |item, piece| {
        let work = parts(*item, grids.group_len, piece).map(|(start, end, group, dst)| {
            let src = &input[start..end];
            let sink = Values {
                start,
                src,
                dst,
                mix: mix_ratio,
            };
            (grids.grids[group], sink)
        });
        apply_each_best(spec.rounding, keys, work);
    });
    Ok(())
}

/// Quantizes to integer codes with per-group scales and zero points.
pub fn quantize<T: Element>(
    tensor: &str,
    input: &[T],
    spec: &QuantSpec,
) -> Result<QuantizedTensor> {
    let grids = find_grids(tensor, input, spec)?;
    let keys = spec.noise.keys();
    let mut codes = vec![0i32; input.len()];
    let mut pieces = split_mut(&mut codes, &grids.items);
    run(&grids.items, &mut pieces, |item, piece| {
        let work = parts(*item, grids.group_len, piece).map(|(start, end, group, dst)| {
            let src = &input[start..end];
            (grids.grids[group], Codes { start, src, dst })
        });
        apply_each_best(spec.rounding, keys, work);
    });
    let scales = grids.grids.iter().map(Grid::scale).collect();
    let zero_points = match spec.quant_type {
        QuantType::Symmetric => Vec::new(),
        QuantType::Asymmetric => grids.grids.iter().map(|g| g.zero() as i32).collect(),
    };
    Ok(QuantizedTensor {
        bits: spec.bits,
        quant_type: spec.quant_type,
        groups: spec.groups,
        codes,
        scales,
        zero_points,
    })
}

/// Dequantizes codes into `output`; the values equal [`fake_quantize`]'s exactly.
pub fn dequantize<T: Element>(quantized: &QuantizedTensor, output: &mut [T]) -> Result<()> {
    let len = quantized.codes.len();
    if output.len() != len {
        return Err(MoqError::LengthMismatch {
            what: "dequantize output".into(),
            expected: len,
            found: output.len(),
        });
    }
    if quantized.groups == 0
        || !len.is_multiple_of(quantized.groups)
        || quantized.scales.len() != quantized.groups
    {
        return Err(MoqError::InvalidGroups {
            tensor: "dequantize input".into(),
            len,
            groups: quantized.groups,
        });
    }
    let zero_count = if quantized.quant_type == QuantType::Asymmetric {
        quantized.groups
    } else {
        0
    };
    if quantized.zero_points.len() != zero_count {
        return Err(MoqError::LengthMismatch {
            what: "zero points".into(),
            expected: zero_count,
            found: quantized.zero_points.len(),
        });
    }
    if len == 0 {
        return Ok(());
    }
    let group_len = len / quantized.groups;
    let body = |(g, (codes, out)): (usize, (&[i32], &mut [T]))| {
        let (s, z) = (quantized.scales[g], quantized.zero_point(g) as i64);
        for (q, o) in codes.iter().zip(out) {
            *o = T::from_f32((*q as i64 - z) as f32 * s);
        }
    };
    let pairs = quantized
        .codes
        .chunks(group_len)
        .zip(output.chunks_mut(group_len))
        .enumerate();
    if len >= PARALLEL_MIN {
        pairs.par_bridge().for_each(body);
    } else {
        pairs.for_each(body);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::chunks::{CHUNK, items};
    use super::*;

    fn fq(x: &[f32], spec: &QuantSpec) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        fake_quantize("t", x, &mut out, spec).unwrap();
        out
    }

    #[test]
    fn symmetric_hand_computed() {
        // 4 bits: qmax 7, s = 0.7/7 = 0.1.
        let x = [0.7f32, -0.36, 0.04, 0.06, 0.0, -0.7];
        let spec = QuantSpec::new(4, QuantType::Symmetric, 1);
        let q = quantize("t", &x, &spec).unwrap();
        assert_eq!(q.codes, [7, -4, 0, 1, 0, -7]);
        assert!((q.scales[0] - 0.1).abs() < 1e-8);
        let y = fq(&x, &spec);
        for (a, b) in y.iter().zip([0.7, -0.4, 0.0, 0.1, 0.0, -0.7]) {
            assert!((a - b).abs() < 1e-7, "{y:?}");
        }
        // 3 bits, s = 1: ties go to even.
        let q = quantize(
            "t",
            &[3.0f32, 1.5, 0.5, -2.5],
            &QuantSpec::new(3, QuantType::Symmetric, 1),
        )
        .unwrap();
        assert_eq!(q.codes, [3, 2, 0, -2]);
    }

    #[test]
    fn asymmetric_hand_computed() {
        // 3 bits: N = 7, range [−1, 2.5] → s = 0.5, z = 2.
        let x = [-1.0f32, 2.5, 0.0, 0.74, 0.76, 1.0];
        let spec = QuantSpec::new(3, QuantType::Asymmetric, 1);
        let q = quantize("t", &x, &spec).unwrap();
        assert_eq!((q.scales[0], q.zero_points[0]), (0.5, 2));
        assert_eq!(q.codes, [0, 7, 2, 3, 4, 4]);
        assert_eq!(fq(&x, &spec), [-1.0, 2.5, 0.0, 0.5, 1.0, 1.0]);
        // An all-positive group: z is negative, the grid still spans [min, max].
        let x = [10.0f32, 10.5, 11.0];
        let y = fq(&x, &QuantSpec::new(8, QuantType::Asymmetric, 1));
        for (a, b) in y.iter().zip(x) {
            assert!((a - b).abs() <= 0.5 / 255.0 + 1e-5, "{y:?}");
        }
    }

    #[test]
    fn ternary_and_binary_hand_computed() {
        // mean|x| = 2.5/6 → Δ ≈ 0.29; past it: 1.0, −0.8, 0.4 → α = 2.2/3.
        let x = [1.0f32, -0.8, 0.4, 0.1, -0.2, 0.0];
        let sum = |xs: &[f32]| xs.iter().map(|v| v.abs() as f64).sum::<f64>();
        let a = (sum(&x[..3]) / 3.0) as f32;
        assert_eq!(
            fq(&x, &QuantSpec::new(2, QuantType::Symmetric, 1)),
            [a, -a, a, 0.0, 0.0, 0.0]
        );
        let b = (sum(&x) / 6.0) as f32;
        assert_eq!(
            fq(&x, &QuantSpec::new(1, QuantType::Symmetric, 1)),
            [b, -b, b, b, -b, b]
        );
    }

    #[test]
    fn all_equal_groups_are_kept_exactly() {
        for bits in [1, 2, 3, 8, 16] {
            for t in [QuantType::Symmetric, QuantType::Asymmetric] {
                if bits <= 2 && t == QuantType::Asymmetric {
                    continue;
                }
                for c in [0.1f32, -3.7e-3, 0.0, 123.456] {
                    let x = [c; 6];
                    let spec = QuantSpec::new(bits, t, 2);
                    assert_eq!(fq(&x, &spec), x, "{bits} {t:?} {c}");
                    let q = quantize("t", &x, &spec).unwrap();
                    let mut back = [0.0f32; 6];
                    dequantize(&q, &mut back).unwrap();
                    assert_eq!(back, x);
                }
            }
        }
    }

    #[test]
    fn errors_name_the_tensor() {
        let spec = QuantSpec::new(8, QuantType::Symmetric, 3);
        let mut out = [0.0f32; 4];
        assert_eq!(
            fake_quantize("enc.w", &[1.0f32; 4], &mut out, &spec)
                .unwrap_err()
                .to_string(),
            "tensor `enc.w`: 4 elements cannot be split into 3 equal groups"
        );
        let x = [1.0f32, 2.0, f32::NAN, 4.0];
        let mut out = [7.0f32; 4];
        let spec = QuantSpec::new(8, QuantType::Symmetric, 1);
        assert_eq!(
            fake_quantize("w", &x, &mut out, &spec)
                .unwrap_err()
                .to_string(),
            "tensor `w`: element 2 is NaN; nothing was written"
        );
        assert_eq!(out, [7.0; 4]);
        let mut x = [1.0f32, f32::NEG_INFINITY];
        assert!(fake_quantize_in_place("w", &mut x, &spec).is_err());
        assert_eq!(x[0], 1.0);
        let bad = QuantSpec::new(2, QuantType::Asymmetric, 1);
        assert!(quantize("w", &[1.0f32], &bad).is_err());
        assert!(quantize("w", &[1.0f32], &QuantSpec::new(17, QuantType::Symmetric, 1)).is_err());
    }

    #[test]
    fn large_tensors_match_small_path() {
        // Above PARALLEL_MIN the work is split across threads; the result must not change.
        let n = PARALLEL_MIN * 2 + 96;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
            .collect();
        for spec in [
            QuantSpec::new(8, QuantType::Symmetric, 1),
            QuantSpec::new(5, QuantType::Asymmetric, 4).stochastic(NoiseKey {
                seed: 1,
                step: 2,
                stream: 3,
            }),
            QuantSpec::new(2, QuantType::Symmetric, 8),
        ] {
            let big = fq(&x, &spec);
            let group_len = n / spec.groups;
            for g in 0..spec.groups {
                // Each group on its own, sequentially, with its own flat offset for the noise.
                let grids = find_grids("t", &x, &spec).unwrap();
                let range = g * group_len..(g + 1) * group_len;
                let mut small = vec![0.0f32; group_len];
                let sink = Values {
                    start: range.start,
                    src: &x[range.clone()],
                    dst: &mut small,
                    mix: 0.0,
                };
                let work = std::iter::once((grids.grids[g], sink));
                apply_each_best(spec.rounding, spec.noise.keys(), work);
                assert_eq!(&big[range], &small[..]);
            }
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            assert_eq!(pool.install(|| fq(&x, &spec)), big);
        }
    }

    #[test]
    fn items_cover_the_tensor_within_groups() {
        for (len, group_len) in [
            (10, 5),
            (CHUNK * 3, CHUNK * 3),
            (CHUNK * 5 + 10, CHUNK * 5 + 10),
            (1 << 20, 128),
            (CHUNK * 4, CHUNK * 2),
        ] {
            let items = items(len, group_len);
            let mut next = 0;
            for item in &items {
                assert_eq!(item.start, next);
                assert!(item.end > item.start);
                let straddles = item.start / group_len != (item.end - 1) / group_len;
                assert!(!straddles || (item.start % group_len == 0 && item.end % group_len == 0));
                next = item.end;
            }
            assert_eq!(next, len);
        }
    }
}

//! How one group's grid ([`Grid`]) is found: the statistics passes ([`find_grids`]),
//! the linear grid's scale and zero point, and the search for a scale that reproduces itself.

use super::apply::{Grid, round_even};
use super::chunks::{Item, items, map_items};
use super::{Element, QuantSpec};
use crate::config::QuantType;
use crate::error::{MoqError, Result};
use crate::simd::quantize::min_max_best;

/// Statistics of one group (or part of one), combined in a fixed order.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stats {
    min: f32,
    max: f32,
    /// Sum of |x|, or of |x| past the ternary threshold in the second pass.
    sum_abs: f64,
    count: u64,
}

impl Stats {
    const EMPTY: Stats = Stats {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        sum_abs: 0.0,
        count: 0,
    };

    fn merge(self, o: Stats) -> Stats {
        Stats {
            min: if o.min < self.min { o.min } else { self.min },
            max: if o.max > self.max { o.max } else { self.max },
            sum_abs: self.sum_abs + o.sum_abs,
            count: self.count + o.count,
        }
    }
}

pub(super) fn sum_abs<T: Element>(xs: &[T], above: f32) -> (f64, u64) {
    let mut sum = 0.0f64;
    let mut count = 0u64;
    for x in xs {
        let a = x.to_f32().abs();
        if a > above {
            sum += a as f64;
            count += 1;
        }
    }
    (sum, count)
}

/// Per-group grids of one tensor, and the work split used to compute them.
pub(super) struct Grids {
    pub(super) group_len: usize,
    pub(super) items: Vec<Item>,
    pub(super) grids: Vec<Grid>,
}

/// Checks the input and computes every group's grid (the statistics passes).
pub(super) fn find_grids<T: Element>(tensor: &str, data: &[T], spec: &QuantSpec) -> Result<Grids> {
    let group_len = spec.check(tensor, data.len())?;
    if data.is_empty() {
        return Ok(Grids {
            group_len: 1,
            items: Vec::new(),
            grids: Vec::new(),
        });
    }
    let items = items(data.len(), group_len);
    let pass = Pass {
        data,
        items: &items,
        group_len,
        groups: spec.groups,
    };
    let stats = pass.min_max(tensor)?;
    let grids = match spec.bits {
        1 => pass
            .mean_abs()
            .into_iter()
            .map(|alpha| Grid::Binary { alpha })
            .collect(),
        2 => pass.ternary(),
        bits => stats
            .iter()
            .map(|s| linear_grid(s.min, s.max, bits, spec.quant_type))
            .collect(),
    };
    Ok(Grids {
        group_len,
        items,
        grids,
    })
}

/// One statistics pass over a tensor's items (pieces of groups, in parallel), summed per group
/// in a fixed order.
struct Pass<'a, T> {
    data: &'a [T],
    items: &'a [Item],
    group_len: usize,
    groups: usize,
}

impl<T: Element> Pass<'_, T> {
    /// `stat` of every group piece, merged per group.
    fn per_group(&self, stat: impl Fn(&[T], usize) -> Stats + Sync + Send) -> Vec<Stats> {
        let partials = map_items(self.items, |item| {
            item.segments(self.group_len)
                .map(|(s, e, group)| (group, stat(&self.data[s..e], group)))
                .collect::<Vec<_>>()
        });
        let mut stats = vec![Stats::EMPTY; self.groups];
        for (group, s) in partials.into_iter().flatten() {
            stats[group] = stats[group].merge(s);
        }
        stats
    }

    /// Each group's min and max; an error naming the first non-finite element.
    fn min_max(&self, tensor: &str) -> Result<Vec<Stats>> {
        let stats = self.per_group(|xs, _| {
            let (min, max, finite) = min_max_best(xs);
            let count = if finite { 0 } else { 1 };
            Stats {
                min,
                max,
                sum_abs: 0.0,
                count,
            }
        });
        if stats.iter().any(|s| s.count > 0) {
            let index = self
                .data
                .iter()
                .position(|x| !x.to_f32().is_finite())
                .unwrap_or(0);
            return Err(MoqError::NonFinite {
                tensor: tensor.to_string(),
                index,
                value: self.data[index].to_f32(),
            });
        }
        Ok(stats)
    }

    /// Per group, the sum and count of |x| above the group's threshold.
    fn sum_above(&self, thresholds: &[f32]) -> Vec<Stats> {
        self.per_group(|xs, group| {
            let (sum_abs, count) = sum_abs(xs, thresholds[group]);
            Stats {
                sum_abs,
                count,
                ..Stats::EMPTY
            }
        })
    }

    /// Each group's mean |x|: the binary grid's α.
    fn mean_abs(&self) -> Vec<f32> {
        self.sum_above(&vec![-1.0; self.groups])
            .iter()
            .map(|s| (s.sum_abs / self.group_len as f64) as f32)
            .collect()
    }

    /// The ternary grids: threshold Δ = 0.7 · mean |x|, α the mean |x| past it.
    fn ternary(&self) -> Vec<Grid> {
        let all = self.sum_above(&vec![-1.0; self.groups]);
        let thresholds: Vec<f32> = all
            .iter()
            .map(|s| (0.7 * s.sum_abs / self.group_len as f64) as f32)
            .collect();
        let past = self.sum_above(&thresholds);
        past.iter()
            .zip(&thresholds)
            .map(|(p, &threshold)| {
                let alpha = if p.count == 0 {
                    0.0
                } else {
                    (p.sum_abs / p.count as f64) as f32
                };
                Grid::Ternary { alpha, threshold }
            })
            .collect()
    }
}

pub(super) const ZERO_LIMIT: f32 = (1u32 << 30) as f32;

pub(crate) fn linear_grid(min: f32, max: f32, bits: u32, quant_type: QuantType) -> Grid {
    let inv_of = |s: f32| if s == 0.0 { 0.0 } else { 1.0 / s };
    match quant_type {
        QuantType::Symmetric => {
            let qmax = ((1u32 << (bits - 1)) - 1) as f32;
            let m = min.abs().max(max.abs());
            let scale = if min == max {
                // All equal: code ±1 with scale |x| reproduces x exactly.
                m
            } else {
                // Q(x)'s largest magnitude is fl(qmax·s); requantizing gives fl(that/qmax).
                let reproduces =
                    |s: f32| (qmax * s) / qmax == s && round_even(m * inv_of(s)) >= qmax;
                stable_scale(m / qmax, reproduces)
            };
            Grid::Linear {
                scale,
                inv: inv_of(scale),
                zero: 0.0,
                lo: -qmax,
                hi: qmax,
            }
        }
        QuantType::Asymmetric => {
            let n = ((1u64 << bits) - 1) as f32;
            let zero_of = |s: f32| {
                if s == 0.0 {
                    0.0
                } else {
                    round_even(-min / s).clamp(-ZERO_LIMIT, ZERO_LIMIT)
                }
            };
            let scale = if min == max {
                // All equal: (q − z)·|x| with q − z = ±1 reproduces x exactly.
                min.abs()
            } else {
                let reproduces = |s: f32| {
                    let z = zero_of(s);
                    let inv = inv_of(s);
                    let (lo, hi) = ((0.0 - z) * s, (n - z) * s);
                    round_even(min * inv) + z <= 0.0
                        && round_even(max * inv) + z >= n
                        && range_scale(lo, hi, n) == s
                        && zero_of(s) == round_even(-lo / s)
                };
                stable_scale(range_scale(min, max, n), reproduces)
            };
            let zero = if min == max {
                if min < 0.0 { 1.0 } else { 0.0 }
            } else {
                zero_of(scale)
            };
            Grid::Linear {
                scale,
                inv: inv_of(scale),
                zero,
                lo: 0.0,
                hi: n,
            }
        }
    }
}

/// `(max − min) / n`, rounded once (the difference of two f32 is exact in f64).
pub(super) fn range_scale(min: f32, max: f32, n: f32) -> f32 {
    ((max as f64 - min as f64) / n as f64) as f32
}

/// How far (in ulps, each way) [`stable_scale`] looks for a self-reproducing scale.
pub(super) const SCALE_SEARCH: usize = 64;

/// The scale nearest `s0` (within [`SCALE_SEARCH`] ulps) that `reproduces` itself; `s0` if
/// none does.
pub(super) fn stable_scale(s0: f32, reproduces: impl Fn(f32) -> bool) -> f32 {
    let step = |s: f32, up: bool| {
        let bits = s.to_bits();
        f32::from_bits(if up { bits + 1 } else { bits - 1 })
    };
    if reproduces(s0) {
        return s0;
    }
    let (mut up, mut down) = (s0, s0);
    for _ in 0..SCALE_SEARCH {
        up = step(up, true);
        if reproduces(up) {
            return up;
        }
        down = step(down, false);
        if down > 0.0 && reproduces(down) {
            return down;
        }
    }
    s0
}

//! Power iteration on one block, and the normalisation of the eigenvalues over blocks
//! (the guide's algorithm page (docs/algorithm.md), "Eigenvalues").
//!
//! A block's vector is a list of flat tensors, one per parameter of the block, so the iteration
//! stays on the device; each iteration reads two numbers back (`⟨Hv, v⟩` and `‖Hv‖²`).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use moq_core::EigenvalueConfig;

use crate::error::{HessianError, Result};

/// DeepSpeed's power-iteration options (the `eigenvalue` config section).
#[derive(Clone, Debug, PartialEq)]
pub struct PowerIteration {
    /// Most Hessian-vector products per block.
    pub max_iter: u32,
    /// Stop when the relative change of λ between two iterations falls below this.
    pub tol: f64,
    /// Added to `‖Hv‖` when normalising the iterate.
    pub stability: f64,
}

impl Default for PowerIteration {
    /// DeepSpeed's defaults: 100 iterations, tol 1e-2, stability 1e-6.
    fn default() -> Self {
        Self::from(&EigenvalueConfig::default())
    }
}

impl From<&EigenvalueConfig> for PowerIteration {
    fn from(config: &EigenvalueConfig) -> Self {
        Self {
            max_iter: config.max_iter,
            tol: config.tol,
            stability: config.stability,
        }
    }
}

impl PowerIteration {
    /// Checks the options (the config loader checks them too; this guards hand-built ones).
    pub fn validate(&self) -> Result<()> {
        let invalid = |option, value: String, reason| {
            Err(HessianError::InvalidOption {
                option,
                value,
                reason,
            })
        };
        if self.max_iter == 0 {
            return invalid("max_iter", "0".into(), "must be at least 1");
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return invalid("tol", self.tol.to_string(), "must be a positive number");
        }
        if !(self.stability.is_finite() && self.stability >= 0.0) {
            return invalid("stability", self.stability.to_string(), "must be ≥ 0");
        }
        Ok(())
    }
}

/// The result of power iteration on one block.
#[derive(Clone, Debug)]
pub struct Eigenpair<B: Backend> {
    /// The eigenvalue of largest magnitude (with its sign), `⟨Hv, v⟩` at the last iteration.
    pub value: f32,
    /// The last iterate `Hv / (‖Hv‖ + stability)`, one flat tensor per parameter: the start of
    /// a warm-started recomputation.
    pub vector: Vec<Tensor<B, 1>>,
    /// Hessian-vector products taken.
    pub iterations: u32,
    /// Whether the relative change of λ fell below `tol` (or the block's Hessian is zero)
    /// before `max_iter`.
    pub converged: bool,
}

/// Runs power iteration from `start` with the Hessian-vector product `hvp`.
///
/// Each iteration: `Hv = hvp(v)` with NaN and ±Inf entries set to 0, `λ = ⟨Hv, v⟩`,
/// `v = Hv / (‖Hv‖ + stability)`. It stops when `|λ − λ_prev| / |λ| < tol` (so after at least
/// two products; DeepSpeed compared the first λ with a dummy 1.0), when `λ = 0`, or after
/// `max_iter` products. The start vector is normalised first.
pub fn power_iteration<B: Backend>(
    start: Vec<Tensor<B, 1>>,
    options: &PowerIteration,
    mut hvp: impl FnMut(&[Tensor<B, 1>]) -> Result<Vec<Tensor<B, 1>>>,
) -> Result<Eigenpair<B>> {
    options.validate()?;
    let (_, norm2) = dot_and_norm2(&start, &start);
    let mut v = scale(start, 1.0 / (norm2.sqrt() + options.stability));
    let mut previous: Option<f64> = None;
    for iteration in 1..=options.max_iter {
        let hv: Vec<_> = hvp(&v)?.into_iter().map(zero_non_finite).collect();
        let (lambda, norm2) = dot_and_norm2(&hv, &v);
        let norm = norm2.sqrt();
        let done = |converged| Eigenpair {
            value: lambda as f32,
            vector: Vec::new(),
            iterations: iteration,
            converged,
        };
        if lambda == 0.0 || norm == 0.0 {
            // A zero block Hessian (or an Hv orthogonal to v, which only a zero start gives).
            return Ok(Eigenpair {
                vector: v,
                ..done(true)
            });
        }
        v = scale(hv, 1.0 / (norm + options.stability));
        let converged = previous.is_some_and(|p| ((lambda - p) / lambda).abs() < options.tol);
        if converged || iteration == options.max_iter {
            return Ok(Eigenpair {
                vector: v,
                ..done(converged)
            });
        }
        previous = Some(lambda);
    }
    unreachable!("max_iter ≥ 1 was checked")
}

/// Normalises raw eigenvalues over blocks as DeepSpeed did: `|λ| / max |λ|`, so each lies in
/// `[0, 1]`; a block whose λ is 0 or not finite gets 1 (the largest stretch, the safe side).
pub fn normalize_eigenvalues(values: &[f32]) -> Vec<f32> {
    let max = values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    values
        .iter()
        .map(|&v| {
            if v == 0.0 || !v.is_finite() || max == 0.0 {
                1.0
            } else {
                (v.abs() / max).min(1.0)
            }
        })
        .collect()
}

/// `⟨a, b⟩` and `‖a‖²` summed over the block's tensors, read back in one transfer.
pub(crate) fn dot_and_norm2<B: Backend>(a: &[Tensor<B, 1>], b: &[Tensor<B, 1>]) -> (f64, f64) {
    let sums: Vec<Tensor<B, 1>> = a
        .iter()
        .zip(b)
        .flat_map(|(a, b)| {
            [
                (a.clone() * b.clone()).sum(),
                a.clone().powi_scalar(2).sum(),
            ]
        })
        .collect();
    if sums.is_empty() {
        return (0.0, 0.0);
    }
    let values: Vec<f64> = Tensor::cat(sums, 0)
        .reshape([a.len(), 2])
        .sum_dim(0)
        .into_data()
        .iter::<f64>()
        .collect();
    (values[0], values[1])
}

fn scale<B: Backend>(v: Vec<Tensor<B, 1>>, factor: f64) -> Vec<Tensor<B, 1>> {
    v.into_iter().map(|t| t.mul_scalar(factor)).collect()
}

fn zero_non_finite<B: Backend>(t: Tensor<B, 1>) -> Tensor<B, 1> {
    let bad = t.clone().is_finite().bool_not();
    t.mask_fill(bad, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_deepspeed() {
        assert_eq!(
            normalize_eigenvalues(&[2.0, -4.0, 1.0]),
            vec![0.5, 1.0, 0.25]
        );
        assert_eq!(normalize_eigenvalues(&[0.0, 3.0]), vec![1.0, 1.0]);
        assert_eq!(
            normalize_eigenvalues(&[f32::NAN, 2.0, f32::INFINITY, 1.0]),
            vec![1.0, 1.0, 1.0, 0.5]
        );
        assert_eq!(normalize_eigenvalues(&[0.0, 0.0]), vec![1.0, 1.0]);
    }

    #[test]
    fn bad_options_are_named() {
        let bad = PowerIteration {
            tol: -1.0,
            ..Default::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("`tol` = -1"), "{err}");
        let bad = PowerIteration {
            max_iter: 0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("max_iter"));
    }
}

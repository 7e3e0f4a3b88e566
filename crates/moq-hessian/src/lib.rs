//! # moq-hessian
//!
//! MoQ's second-order part: the top eigenvalue of the loss Hessian restricted to each layer,
//! by power iteration, used to stretch that layer's quantization period (the factor
//! `1 + floor(4e)` of DESIGN.md section 3, applied by [`moq_core::Schedule::set_eigenvalues`]).
//!
//! **Status: not implemented yet** (tracked by the issue "moq-hessian: per-layer top Hessian
//! eigenvalues on burn autodiff"). It will hold:
//! - exact Hessian-vector products through nested autodiff (`Autodiff<Autodiff<B>>`, the recipe
//!   in DESIGN.md section 4), with a central finite-difference fallback;
//! - power iteration with DeepSpeed's options (`max_iter`, `tol`, `stability`), a seeded start
//!   vector, warm starts, and the normalisation to `[0, 1]`;
//! - the eigenvalue provider the training wrapper of `moq-burn` calls.
//!
//! Until then schedules run with the eigenvalue factor 1, as DeepSpeed did with eigenvalues off.
#![warn(missing_docs)]

/// The `eigenvalue` config section this crate will read (re-exported from `moq-core`).
pub use moq_core::EigenvalueConfig;

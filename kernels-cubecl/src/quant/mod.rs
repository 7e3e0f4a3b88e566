//! Group-wise quantization on the device: fused fake quantization ([`fake_quantize`]), codes
//! ([`crate::quantize()`], packed as `moq-core`'s `Packed32` layout) and the grids behind both.
//! One file per part: `scale` (the grid arithmetic), `kernels` (the `#[cube]` kernels) and
//! `launch` (the host side that checks the input and launches them).
//!
//! Every operation is the same three steps (the guide's algorithm page (docs/algorithm.md), "Quantizer"):
//! 1. **statistics**: one cube per piece of a group (at most [`SPAN`] elements) reduces min,
//!    max, Σ|x| (or Σ|x| past the ternary threshold), a count and a non-finite count into a
//!    partial;
//! 2. **grid**: cubes merge each group's partials 256 at a time (a tree, so a large group costs
//!    a few short passes, not one long serial one), then one unit per group computes the
//!    group's grid (`scale, 1/scale, zero, lo, hi`) exactly as `moq-core` does, including its
//!    search for a scale that requantizes exactly; ternary grids take a second statistics pass;
//! 3. **apply**: one unit per element (or per packed word) computes the code, with the
//!    stochastic offset from `moq-core`'s counter-based generator, and writes the value
//!    (mixed with the input when asked) or the packed code.
//!
//! The only read back to the host is one `u32`, the non-finite count, so that a NaN becomes an
//! error naming the tensor instead of a silently broken model.
//!
//! Results equal the reference except in the last bits of some scales: GPU division is not
//! always correctly rounded (WGSL allows 2.5 ulp), the reference sums |x| in f64 for 1- and
//! 2-bit grids, and it divides the asymmetric range in f64, which the kernel reproduces with
//! a TwoSum error term and an `fma` correction: exact where `fma` is fused and the compiler keeps
//! the order of operations (CUDA), but not on lavapipe, where both the TwoSum term and `fma`
//! differ from the CPU's in about half the cases (measured). A value can then differ by a few
//! ulps, and an element sitting exactly on a rounding tie can land one grid step away. The
//! tests bound both. Symmetric grids (nearest, stochastic, mixed) match the reference bit for
//! bit, which the kernel tests assert (on lavapipe in CI).

mod kernels;
mod launch;
mod scale;

pub(crate) use kernels::unit_index;
pub use launch::fake_quantize;
pub(crate) use launch::{check_buffer, cube_count, quantize_words, read};

/// Units per cube in the statistics pass.
pub(crate) const UNITS: u32 = 256;
/// Units per cube in element-wise kernels.
pub(crate) const UNITS_ELEMENTWISE: u32 = 256;
/// Elements one cube reduces in the statistics pass.
pub const SPAN: usize = 4096;
/// Floats per partial (statistics of a piece of a group); the fields are at the offsets below.
pub(crate) const PARTIAL: usize = 5;
/// Partial field: the smallest finite value.
pub(crate) const P_MIN: usize = 0;
/// Partial field: the largest finite value.
pub(crate) const P_MAX: usize = 1;
/// Partial field: Σ|x| (past the ternary threshold on the second ternary pass).
pub(crate) const P_SUM: usize = 2;
/// Partial field: how many values the sum holds.
pub(crate) const P_COUNT: usize = 3;
/// Partial field: how many values are NaN or infinite.
pub(crate) const P_BAD: usize = 4;
/// Floats per grid record, one record per group; the fields are at the offsets below.
pub(crate) const GRID: usize = 5;
/// Grid field: the scale (α for 1- and 2-bit grids).
pub(crate) const SCALE: usize = 0;
/// Grid field: 1/scale for linear grids…
pub(crate) const INV_SCALE: usize = 1;
/// …which holds the threshold `Δ` for ternary grids.
pub(crate) const THRESHOLD: usize = 1;
/// Grid field: the zero point `z` (0 for symmetric, ternary and binary grids).
pub(crate) const ZERO: usize = 2;
/// Grid field: the smallest code.
pub(crate) const LO: usize = 3;
/// Grid field: the largest code.
pub(crate) const HI: usize = 4;

/// The kind of grid a width gets: a comptime parameter of the apply kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GridKind {
    /// Symmetric or asymmetric, 3 bits and more.
    Linear,
    /// 2 bits: `+α`, 0, `−α`.
    Ternary,
    /// 1 bit: `±α`.
    Binary,
}

impl GridKind {
    pub(crate) fn of(bits: u32) -> Self {
        match bits {
            1 => GridKind::Binary,
            2 => GridKind::Ternary,
            _ => GridKind::Linear,
        }
    }
}

/// What one launch of the grid kernel computes from a statistics pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GridStep {
    /// Scale, zero and code range of a linear grid, from min and max.
    Linear,
    /// α = mean |x|.
    Binary,
    /// Δ = 0.7 · mean |x| (then a second statistics pass sums |x| past it).
    TernaryThreshold,
    /// α = mean of |x| past Δ.
    TernaryAlpha,
}

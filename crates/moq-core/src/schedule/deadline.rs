//! Deadline schedules (docs/algorithm.md, "Deadline schedules"): each layer's window and
//! the step of its next drop, and the eigenvalue factor that places the window.

/// The deadline schedule's window for factor `factor` (docs/algorithm.md, "Deadline
/// schedules"): a layer of factor `f` runs MoQ's doubling schedule inside `[S, D]`,
/// `S = ⌊D·(f−1)/f⌋`, with `D` = `deadline`, the quantizing step every drop is due by: the
/// whole run for `f = 1`, its last fifth for `f = 5`.
pub fn deadline_window(deadline: u64, factor: u64) -> u64 {
    let (d, f) = (u128::from(deadline), u128::from(factor.max(1)));
    (d * (f - 1) / f) as u64
}

/// The deadline schedule: the quantizing step of a layer's next drop, at quantizing step `q`,
/// with `left ≥ 1` drops to go in the window `[window_start, deadline]`.
///
/// The drop with `left` to go comes at `S + ⌈(D − S) / 2^(left−1)⌉`: the last at `D`, the one
/// before half way through the window, and so on. It is kept after `q` and early enough for the
/// drops after it (one per step): in `q + 1 ..= D − left + 1`.
///
/// ```
/// use moq_core::schedule::{deadline_threshold, deadline_window};
/// // 4 drops by quantizing step 80: at 10, 20, 40, 80 with factor 1; in the last half with 2.
/// let drops = |f| {
///     let (mut q, start) = (0, deadline_window(80, f));
///     (1..=4).rev().map(|left| { q = deadline_threshold(80, start, q, left); q }).collect::<Vec<_>>()
/// };
/// assert_eq!(drops(1), [10, 20, 40, 80]);
/// assert_eq!(drops(2), [45, 50, 60, 80]);
/// ```
pub fn deadline_threshold(deadline: u64, window_start: u64, q: u64, left: u32) -> u64 {
    let d = u128::from(deadline);
    let start = u128::from(window_start).min(d);
    let shift = (left.max(1) - 1).min(127);
    let planned = start + (d - start).div_ceil(1u128 << shift);
    let latest = d.saturating_sub(u128::from(left.max(1)) - 1);
    let earliest = u128::from(q) + 1;
    planned.min(latest).max(earliest) as u64
}

/// `1 + floor(4e)`, or 1 without an eigenvalue.
pub fn eigen_factor(eigenvalue: Option<f32>) -> u64 {
    match eigenvalue {
        Some(e) => 1 + (4.0 * e.clamp(0.0, 1.0)).floor() as u64,
        None => 1,
    }
}

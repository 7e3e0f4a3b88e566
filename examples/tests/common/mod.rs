//! What two training runs that differ only by float summation order must agree on (the `ddp`
//! and `backends` tests): the masters to a few ulps of their magnitude, the quantized weights
//! to one grid step for at most one weight in a thousand.

/// The largest magnitude in `a`.
pub fn magnitude(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// The largest difference between `a` and `b`, element by element.
pub fn apart(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `a` and `b` of `path` hold as many values.
fn same_len(path: &str, a: &[f32], b: &[f32]) {
    assert_eq!(
        a.len(),
        b.len(),
        "`{path}`: {} against {} values",
        a.len(),
        b.len()
    );
}

/// Full-precision values (masters, or an unquantized model's weights) `a` and `b` of `path`:
/// within `relative` of their magnitude.
pub fn assert_close(path: &str, a: &[f32], b: &[f32], relative: f32) {
    same_len(path, a, b);
    let (scale, worst) = (magnitude(a), apart(a, b));
    assert!(
        worst <= relative * scale,
        "`{path}`: {worst} apart (magnitude {scale}, {relative} of it allowed)"
    );
}

/// Quantized weights `a` and `b` of `path` at `bits`: a weight follows its group's scale (an ulp
/// apart) or, for a master within ulps of a rounding boundary, moves one grid step, which is
/// allowed for one weight in a thousand.
pub fn assert_quantized_close(path: &str, a: &[f32], b: &[f32], bits: u32) {
    same_len(path, a, b);
    let scale = magnitude(a);
    // The coarsest grid step any group of this tensor can have.
    let step = scale / ((1 << (bits - 1)) - 1) as f32;
    let moved = a
        .iter()
        .zip(b)
        .filter(|(x, y)| (*x - *y).abs() > 1e-5 * scale)
        .count();
    let worst = apart(a, b);
    assert!(
        worst <= step * 1.01,
        "weight `{path}`: {worst} apart, over one step ({step})"
    );
    assert!(
        moved * 1000 <= a.len(),
        "weight `{path}`: {moved} of {} weights moved a grid step",
        a.len()
    );
}

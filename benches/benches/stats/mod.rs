//! The few statistics every ratio benchmark prints: medians and how far two outputs are apart.

use std::time::Duration;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The median of `v` (non-empty).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// max |a − b| / max |b|: how far an output is from its reference.
pub fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let scale = b
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// A tensor's values as f32.
pub fn values<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float data")
}

//! [`Element`]: the float types the quantizer reads and writes (f32, f16, bf16).

use half::{bf16, f16};

/// A float type the quantizer reads and writes. Arithmetic is in f32.
pub trait Element: Copy + Send + Sync + 'static {
    /// Name used in messages.
    const NAME: &'static str;
    /// Widens to f32 (exactly).
    fn to_f32(self) -> f32;
    /// Narrows from f32, rounding to nearest.
    fn from_f32(value: f32) -> Self;
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl Element for f16 {
    const NAME: &'static str = "f16";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }
}

impl Element for bf16 {
    const NAME: &'static str = "bf16";
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
}

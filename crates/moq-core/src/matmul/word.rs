//! [`Word`]: the packed words as the CPU kernel reads them, whatever int type holds them.

/// A packed word as stored: `u32`, or the same 32 bits in an `i32` or an `i64` (as burn's int
/// tensors hold them).
pub trait Word: Copy + Send + Sync + 'static {
    /// The 32 bits.
    fn bits(self) -> u32;

    /// The words as `u32`s in place, when they are 32-bit (then the kernel loads them as
    /// vectors directly).
    fn as_u32(words: &[Self]) -> Option<&[u32]> {
        let _ = words;
        None
    }
}

impl Word for u32 {
    #[inline(always)]
    fn bits(self) -> u32 {
        self
    }

    fn as_u32(words: &[Self]) -> Option<&[u32]> {
        Some(words)
    }
}

impl Word for i32 {
    #[inline(always)]
    fn bits(self) -> u32 {
        self as u32
    }

    fn as_u32(words: &[Self]) -> Option<&[u32]> {
        Some(bytemuck::cast_slice(words))
    }
}

/// A word sign-extended into an `i64` (an int tensor of a backend whose ints are 64-bit): the
/// low 32 bits.
impl Word for i64 {
    #[inline(always)]
    fn bits(self) -> u32 {
        self as u32
    }
}

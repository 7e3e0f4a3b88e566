//! What the integer-dot kernel (`simd/dot.rs`) reads: the repacked codes of a range of column
//! tiles and one row of `x` quantized to int8.

/// Columns per tile: the 8 `i32` lanes of one AVX2 vector, each summing 4 products.
pub(crate) const TILE: usize = 8;

/// Rows of `W` (elements of `x`) per activation block: one int8 scale each.
pub(crate) const BLOCK: usize = 32;

/// How a tile stores its codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// 1 to 4 bits: `u = c + 8` in a nibble; 32 bytes hold 8 rows of `K` of the tile's 8
    /// columns (byte `4j + r`: row `r` in the low nibble, row `4 + r` in the high one, of
    /// column `j`).
    Nibbles,
    /// 5 to 8 bits: `c` as an `i8`; 32 bytes hold 4 rows of the 8 columns (byte `4j + r`).
    Bytes,
}

impl Storage {
    /// The storage of a `bits`-wide code.
    pub(crate) fn of(bits: u32) -> Self {
        if bits <= 4 {
            Storage::Nibbles
        } else {
            Storage::Bytes
        }
    }

    /// Bytes of one tile over `k_pad` rows.
    pub(crate) fn tile_bytes(self, k_pad: usize) -> usize {
        match self {
            Storage::Nibbles => k_pad * TILE / 2,
            Storage::Bytes => k_pad * TILE,
        }
    }
}

/// One row of `x`, quantized for the activation lane `a` of a tile: `q` holds `k_pad` int8
/// values (`x_k · s_g(k)` rounded to `t` of its block), `t` one scale per block of [`BLOCK`].
pub(crate) struct Lane<'a> {
    pub q: &'a [i8],
    pub t: &'a [f32],
}

/// The codes of tiles `first..first + count` and the activations each reads.
pub(crate) struct DotJob<'a> {
    pub storage: Storage,
    /// Rows of `W` padded to a whole block.
    pub k_pad: usize,
    /// Every tile's codes, tile after tile.
    pub codes: &'a [u8],
}

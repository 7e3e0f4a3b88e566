//! The packed layout's sizes and checks, in one place: every crate that stores, uploads or
//! multiplies packed codes ([`mod@crate::pack`], `moq-burn`'s `PackedWeight`, `moq-kernels`'
//! `DeviceWeights` and launchers) derives its buffer sizes from a [`PackedShape`] and checks
//! them with it, so the width rules ([`PACKED_BITS`] stored, [`KERNEL_BITS`] multiplied), the
//! word count of a row and the 32-bit index limit of the kernels cannot drift apart.
//!
//! ```
//! use moq_core::{PackedShape, QuantType, ScaleFormat};
//! let shape = PackedShape::new([4096, 4096], 4, QuantType::Symmetric, 4096 * 32).unwrap();
//! assert_eq!(shape.words_per_row(), 512); // eight 4-bit codes per u32
//! assert_eq!(shape.group_len(), 128);
//! assert_eq!(shape.scale_bytes(ScaleFormat::F16), 4096 * 32 * 2);
//! // A 12-bit layer (a schedule that stopped early) is stored two codes a word; the low-bit
//! // matmuls multiply 1 to 8 bits only.
//! let wide = PackedShape::new([3, 5], 12, QuantType::Symmetric, 1).unwrap();
//! assert_eq!(wide.words_per_row(), 3);
//! assert!(wide.check_kernel().is_err());
//! assert!(PackedShape::new([3, 5], 17, QuantType::Symmetric, 1).is_err());
//! ```

use std::ops::RangeInclusive;

use crate::config::QuantType;
use crate::error::{MoqError, Result};
use serde::{Deserialize, Serialize};

/// Bit widths the `Packed32` layout (and so the export) holds: every width a schedule can end at.
/// `CodeLayout::Int8` holds 1 to 8.
pub const PACKED_BITS: RangeInclusive<u32> = 1..=16;

/// Bit widths the low-bit matmuls (the CPU matmul, the GPU kernels) and the device quantizer
/// handle; a wider layer is served dequantized.
pub const KERNEL_BITS: RangeInclusive<u32> = 1..=8;

/// The most elements (or words) of one buffer the GPU kernels address: they index with `u32`.
pub const MAX_INDEXED: usize = u32::MAX as usize;

/// Codes per `u32` word at `bits` per code (`bits` in [`PACKED_BITS`]).
#[inline]
pub fn codes_per_word(bits: u32) -> usize {
    (32 / bits.clamp(1, 32)) as usize
}

/// How per-group scales are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScaleFormat {
    /// f32: unpacking gives the quantizer's scales back exactly.
    F32,
    /// f16: half the size; unpacking gives the scales rounded to f16.
    F16,
}

impl ScaleFormat {
    /// Bytes of one stored scale.
    pub fn bytes(self) -> usize {
        match self {
            ScaleFormat::F32 => 4,
            ScaleFormat::F16 => 2,
        }
    }
}

/// The geometry of a packed `[rows, row_len]` tensor: width, grid type and group count, checked
/// when built. Rows start on a new word; groups split the flat element sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedShape {
    /// Rows (for a matmul weight `W` of `y = x · W`: the inner dimension `k`).
    pub rows: usize,
    /// Elements per row (for a matmul weight: the outputs `n`).
    pub row_len: usize,
    /// Bits per code.
    pub bits: u32,
    /// Symmetric or asymmetric grid.
    pub quant_type: QuantType,
    /// Groups over the flat element sequence.
    pub groups: usize,
}

impl PackedShape {
    /// A checked shape: `bits` in [`PACKED_BITS`] and `groups` dividing `rows · row_len` (an empty tensor
    /// needs `row_len > 0` and at least one group).
    pub fn new(shape: [usize; 2], bits: u32, quant_type: QuantType, groups: usize) -> Result<Self> {
        let [rows, row_len] = shape;
        let bad = |reason: String| Err(MoqError::Packed { reason });
        if !PACKED_BITS.contains(&bits) {
            return bad(format!("{bits} bits (packed codes hold 1 to 16)"));
        }
        if row_len == 0 {
            return bad("rows of 0 elements".into());
        }
        let Some(len) = rows.checked_mul(row_len) else {
            return bad(format!("[{rows}, {row_len}] overflows the address space"));
        };
        if groups == 0 || !len.is_multiple_of(groups) {
            return bad(format!("{len} elements do not form {groups} equal groups"));
        }
        Ok(Self {
            rows,
            row_len,
            bits,
            quant_type,
            groups,
        })
    }

    /// The shape of a flat tensor of `len` elements in rows of `row_len`.
    pub fn of_flat(
        len: usize,
        row_len: usize,
        bits: u32,
        quant_type: QuantType,
        groups: usize,
    ) -> Result<Self> {
        if row_len == 0 || !len.is_multiple_of(row_len) {
            return Err(MoqError::Packed {
                reason: format!("{len} elements do not form rows of {row_len}"),
            });
        }
        Self::new([len / row_len, row_len], bits, quant_type, groups)
    }

    /// Elements.
    #[inline]
    pub fn len(&self) -> usize {
        self.rows * self.row_len
    }

    /// Whether the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Codes per `u32` word.
    #[inline]
    pub fn codes_per_word(&self) -> usize {
        codes_per_word(self.bits)
    }

    /// Words per row: `ceil(row_len / codes_per_word)`.
    #[inline]
    pub fn words_per_row(&self) -> usize {
        self.row_len.div_ceil(self.codes_per_word())
    }

    /// Words of the whole tensor.
    #[inline]
    pub fn words(&self) -> usize {
        self.rows * self.words_per_row()
    }

    /// The bits of word `w` of a row that hold codes: `codes_per_word` fields of `bits` from
    /// the lowest bit, fewer in a row's last word; every other bit is padding, zero.
    pub fn used_bits(&self, w: usize) -> u32 {
        let per_word = self.codes_per_word();
        let codes = if w + 1 == self.words_per_row() {
            self.row_len - w * per_word
        } else {
            per_word
        };
        let bits = codes as u32 * self.bits;
        if bits >= 32 {
            u32::MAX
        } else {
            (1u32 << bits) - 1
        }
    }

    /// Checks that every padding bit of `words` (the whole tensor's) is zero, naming the first
    /// word that has one set.
    pub fn check_padding(&self, words: &[u32]) -> Result<()> {
        let per_row = self.words_per_row();
        let masks: Vec<u32> = (0..per_row).map(|w| !self.used_bits(w)).collect();
        if masks.iter().all(|&m| m == 0) {
            return Ok(());
        }
        for (i, &word) in words.iter().enumerate() {
            let padding = word & masks[i % per_row];
            if padding != 0 {
                return Err(MoqError::Packed {
                    reason: format!(
                        "code word {i} (row {}, word {} of {per_row}) has padding bits set \
                         ({padding:#010x}); a row's {} {}-bit codes leave them zero",
                        i / per_row,
                        i % per_row,
                        self.row_len,
                        self.bits
                    ),
                });
            }
        }
        Ok(())
    }

    /// Elements per group.
    #[inline]
    pub fn group_len(&self) -> usize {
        self.len() / self.groups
    }

    /// Stored zero points: one per group for asymmetric grids, none for symmetric ones.
    #[inline]
    pub fn zero_points(&self) -> usize {
        match self.quant_type {
            QuantType::Asymmetric => self.groups,
            QuantType::Symmetric => 0,
        }
    }

    /// Bytes a served layer of this shape holds on its device: the words, and per group one
    /// scale of `scale_bytes` and one `i32` zero point (held as zeros for symmetric grids too:
    /// the kernels read one per group).
    pub fn device_bytes(&self, scale_bytes: usize) -> usize {
        self.words() * 4 + self.groups * (scale_bytes + 4)
    }

    /// Bytes of the scales stored as `format`.
    pub fn scale_bytes(&self, format: ScaleFormat) -> usize {
        self.groups * format.bytes()
    }

    /// Checks the lengths of the parts against the shape: `words` words, `scales` scales and
    /// `zero_points` zero points, exactly.
    pub fn check_parts(&self, words: usize, scales: usize, zero_points: usize) -> Result<()> {
        let bad = |reason: String| Err(MoqError::Packed { reason });
        let [rows, row_len, bits] = [self.rows, self.row_len, self.bits as usize];
        if words != self.words() {
            return bad(format!(
                "{words} words for a [{rows}, {row_len}] tensor of {bits}-bit codes ({} expected)",
                self.words()
            ));
        }
        if scales != self.groups {
            return bad(format!("{scales} scales for {} groups", self.groups));
        }
        if zero_points != self.zero_points() {
            return bad(format!(
                "{zero_points} zero points, {} expected",
                self.zero_points()
            ));
        }
        Ok(())
    }

    /// Checks that the low-bit matmuls and the device quantizer handle the width
    /// ([`KERNEL_BITS`]); a wider tensor is stored and exported, and served dequantized.
    pub fn check_kernel(&self) -> Result<()> {
        if KERNEL_BITS.contains(&self.bits) {
            return Ok(());
        }
        Err(MoqError::Packed {
            reason: format!(
                "{} bits: the low-bit matmuls multiply 1 to 8-bit codes (dequantize a wider                  tensor to serve it)",
                self.bits
            ),
        })
    }

    /// Checks that the GPU kernels can index the tensor (its elements and words fit in `u32`).
    pub fn check_indexable(&self, tensor: &str) -> Result<()> {
        check_indexable(tensor, self.len())
    }
}

/// Checks that a buffer of `len` elements is within the kernels' 32-bit indexing
/// ([`MAX_INDEXED`]): beyond it an index would wrap silently.
pub fn check_indexable(tensor: &str, len: usize) -> Result<()> {
    if len > MAX_INDEXED {
        return Err(MoqError::TooLarge {
            tensor: tensor.to_string(),
            len,
            max: MAX_INDEXED,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_layout() {
        let s = PackedShape::new([3, 25], 3, QuantType::Asymmetric, 5).unwrap();
        assert_eq!(
            (s.codes_per_word(), s.words_per_row(), s.words()),
            (10, 3, 9)
        );
        assert_eq!((s.group_len(), s.zero_points()), (15, 5));
        assert!(s.check_parts(9, 5, 5).is_ok());
        assert!(s.check_parts(8, 5, 5).is_err());
        assert!(s.check_parts(9, 4, 5).is_err());
        assert!(s.check_parts(9, 5, 0).is_err());
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert!(PackedShape::new([4, 4], 0, QuantType::Symmetric, 1).is_err());
        assert!(PackedShape::new([4, 4], 17, QuantType::Symmetric, 1).is_err());
        assert!(PackedShape::new([4, 0], 4, QuantType::Symmetric, 1).is_err());
        assert!(PackedShape::new([4, 4], 4, QuantType::Symmetric, 3).is_err());
        assert!(PackedShape::new([usize::MAX, 2], 4, QuantType::Symmetric, 1).is_err());
        assert!(PackedShape::of_flat(10, 4, 4, QuantType::Symmetric, 1).is_err());
    }

    #[test]
    fn the_kernels_index_limit_is_named() {
        let big = PackedShape::new([1 << 16, 1 << 16], 4, QuantType::Symmetric, 1).unwrap();
        let err = big.check_indexable("w").unwrap_err();
        assert!(err.to_string().contains("4294967296"), "{err}");
        let fits = PackedShape::new([1 << 16, (1 << 16) - 1], 4, QuantType::Symmetric, 1).unwrap();
        assert!(fits.check_indexable("w").is_ok());
    }
}

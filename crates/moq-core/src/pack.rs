//! Packed storage of quantized codes: the formats the GPU kernels and the export read.
//!
//! # Code storage: signed, offset for asymmetric grids
//! A stored code `c` and stored zero point `z'` give the value `(c − z')·scale` in every layout.
//! - Symmetric grids store the code itself (`c = q`, `z' = 0`): two's complement, so an 8-bit
//!   code is an `i8` exactly as burn's `Q8S` holds it.
//! - Asymmetric grids store `c = q − 2^(b−1)` and `z' = z − 2^(b−1)`, which keeps `c` in the
//!   signed `b`-bit range and leaves `c − z' = q − z` unchanged.
//! - Binary (1 bit) is the one exception: bit 1 means `+1` and bit 0 means `−1`.
//!
//! # Layouts
//! - [`CodeLayout::Int8`]: one `i8` per element, row-major (any width ≤ 8).
//! - [`CodeLayout::Packed32`]: `per_word = 32 / b` codes per little-endian `u32` word (8 for
//!   4-bit, 4 for 8-bit, 10 for 3-bit with the top 2 bits zero, 2 for 11 to 16 bits): every
//!   width 1–16 ([`crate::PACKED_BITS`]), so a layer whose schedule stopped above 8 bits is
//!   exported too. The low-bit matmuls multiply 1–8 bits ([`crate::KERNEL_BITS`]). Element `j` of a row lives in
//!   word `j / per_word`, bits `[(j % per_word)·b, (j % per_word)·b + b)`: element 0 in the
//!   lowest bits. Each row starts on a new word: a row of `n` elements takes
//!   `ceil(n / per_word)` words, the unused high fields of its last word are zero. To read a
//!   signed field, shift it to the top of the word and arithmetic-shift it back down.
//! - Scales are one per group, in f32 or f16 ([`ScaleFormat`]); zero points (asymmetric only)
//!   are one `i32` per group.
//!
//! Groups split the flat element sequence (docs/algorithm.md), independently of rows.
//!
//! ```
//! use moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, pack, quantize, unpack};
//! let w: Vec<f32> = (0..24).map(|i| i as f32 - 11.5).collect();
//! let q = quantize("w", &w, &QuantSpec::new(4, QuantType::Symmetric, 2)).unwrap();
//! let packed = pack(&q, 12, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
//! assert_eq!(packed.words().unwrap().len(), 2 * 2); // two rows of 12 codes, 8 per word
//! assert_eq!(unpack(&packed).unwrap(), q);
//! ```

use std::borrow::Cow;

use half::f16;
use serde::{Deserialize, Serialize};

use crate::config::QuantType;
use crate::error::{MoqError, Result};
pub use crate::layout::ScaleFormat;
use crate::layout::{KERNEL_BITS, PACKED_BITS, PackedShape, codes_per_word};
use crate::quantizer::QuantizedTensor;

/// How codes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodeLayout {
    /// One `i8` per element.
    Int8,
    /// `32 / bits` codes per `u32` word, rows padded to whole words.
    Packed32,
}

/// Stored codes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PackedCodes {
    /// [`CodeLayout::Int8`].
    Int8(Vec<i8>),
    /// [`CodeLayout::Packed32`].
    Words(Vec<u32>),
}

/// Stored scales.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PackedScales {
    /// f32 scales.
    F32(Vec<f32>),
    /// f16 scales.
    F16(Vec<f16>),
}

/// A quantized tensor in a packed layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackedTensor {
    /// Bit width of each code.
    pub bits: u32,
    /// Grid type.
    pub quant_type: QuantType,
    /// Number of groups (over the flat element sequence).
    pub groups: usize,
    /// Number of elements.
    pub len: usize,
    /// Elements per row (the innermost dimension).
    pub row_len: usize,
    /// The codes.
    pub codes: PackedCodes,
    /// One scale per group.
    pub scales: PackedScales,
    /// Stored zero points `z − 2^(b−1)`, one per group; empty for symmetric grids.
    pub zero_points: Vec<i32>,
}

impl PackedTensor {
    /// The tensor's geometry, checked ([`PackedShape::of_flat`]).
    pub fn shape(&self) -> Result<PackedShape> {
        PackedShape::of_flat(
            self.len,
            self.row_len,
            self.bits,
            self.quant_type,
            self.groups,
        )
    }

    /// Checks that the parts agree: bits in 1–8, whole rows and groups, and as many codes,
    /// scales and zero points as those need (a file read from disk is user input).
    pub fn check(&self) -> Result<()> {
        let shape = self.shape()?;
        let scales = match &self.scales {
            PackedScales::F32(s) => s.len(),
            PackedScales::F16(s) => s.len(),
        };
        match &self.codes {
            PackedCodes::Words(w) => {
                shape.check_parts(w.len(), scales, self.zero_points.len())?;
                shape.check_padding(w)
            }
            PackedCodes::Int8(_) if !KERNEL_BITS.contains(&self.bits) => Err(MoqError::Packed {
                reason: format!(
                    "{}-bit codes in the Int8 layout (it holds 1 to 8)",
                    self.bits
                ),
            }),
            PackedCodes::Int8(c) if c.len() != self.len => Err(MoqError::Packed {
                reason: format!("{} code entries, {} expected", c.len(), self.len),
            }),
            // One byte per code: the word count of the shape does not apply.
            PackedCodes::Int8(_) => {
                shape.check_parts(shape.words(), scales, self.zero_points.len())
            }
        }
    }

    /// The scales' storage format.
    pub fn scale_format(&self) -> ScaleFormat {
        match self.scales {
            PackedScales::F32(_) => ScaleFormat::F32,
            PackedScales::F16(_) => ScaleFormat::F16,
        }
    }

    /// The same codes, scales and zero points in `layout`, borrowed when already in it: the one
    /// `Int8` ⇄ `Packed32` conversion.
    pub fn to_layout(&self, layout: CodeLayout) -> Result<Cow<'_, PackedTensor>> {
        match (&self.codes, layout) {
            (PackedCodes::Words(_), CodeLayout::Packed32)
            | (PackedCodes::Int8(_), CodeLayout::Int8) => Ok(Cow::Borrowed(self)),
            _ => pack(&unpack(self)?, self.row_len, layout, self.scale_format()).map(Cow::Owned),
        }
    }

    /// The words of a [`CodeLayout::Packed32`] tensor.
    pub fn words(&self) -> Option<&[u32]> {
        match &self.codes {
            PackedCodes::Words(w) => Some(w),
            PackedCodes::Int8(_) => None,
        }
    }

    /// The bytes of a [`CodeLayout::Int8`] tensor.
    pub fn int8(&self) -> Option<&[i8]> {
        match &self.codes {
            PackedCodes::Int8(c) => Some(c),
            PackedCodes::Words(_) => None,
        }
    }

    /// Bytes taken by codes, scales and zero points.
    pub fn size_bytes(&self) -> usize {
        let codes = match &self.codes {
            PackedCodes::Int8(c) => c.len(),
            PackedCodes::Words(w) => w.len() * 4,
        };
        let scales = match &self.scales {
            PackedScales::F32(s) => s.len() * 4,
            PackedScales::F16(s) => s.len() * 2,
        };
        codes + scales + self.zero_points.len() * 4
    }
}

/// The stored-code offset: `2^(b−1)` for asymmetric grids, 0 for symmetric.
fn offset(bits: u32, quant_type: QuantType) -> i32 {
    match quant_type {
        QuantType::Symmetric => 0,
        QuantType::Asymmetric => 1 << (bits - 1),
    }
}

/// Packs codes with rows of `row_len` elements.
pub fn pack(
    q: &QuantizedTensor,
    row_len: usize,
    layout: CodeLayout,
    scales: ScaleFormat,
) -> Result<PackedTensor> {
    let len = q.codes.len();
    let (widths, held) = match layout {
        CodeLayout::Packed32 => (PACKED_BITS, "the Packed32 layout holds 1 to 16 bits"),
        CodeLayout::Int8 => (KERNEL_BITS, "the Int8 layout holds 1 to 8 bits"),
    };
    if !widths.contains(&q.bits) {
        return Err(MoqError::UnsupportedMode {
            tensor: "pack".into(),
            reason: format!("{} bits cannot be packed: {held}", q.bits),
        });
    }
    if row_len == 0 || !len.is_multiple_of(row_len) {
        return Err(MoqError::InvalidGroups {
            tensor: "pack rows".into(),
            len,
            groups: row_len,
        });
    }
    let off = offset(q.bits, q.quant_type);
    let (lo, hi) = match (q.quant_type, q.bits) {
        (QuantType::Asymmetric, b) => (0, (1 << b) - 1),
        (QuantType::Symmetric, 1) => (-1, 1),
        (QuantType::Symmetric, b) => (-(1 << (b - 1)), (1 << (b - 1)) - 1),
    };
    if let Some(index) = q.codes.iter().position(|c| !(lo..=hi).contains(c)) {
        return Err(MoqError::UnsupportedMode {
            tensor: "pack".into(),
            reason: format!(
                "code {} at element {index} does not fit in {} bits",
                q.codes[index], q.bits
            ),
        });
    }
    let stored = |c: i32| {
        if q.bits == 1 {
            i32::from(c > 0)
        } else {
            c - off
        }
    };
    let codes = match layout {
        CodeLayout::Int8 => PackedCodes::Int8(q.codes.iter().map(|&c| stored(c) as i8).collect()),
        CodeLayout::Packed32 => {
            let per_word = codes_per_word(q.bits);
            let mask = (1u32 << q.bits) - 1;
            let words_per_row = row_len.div_ceil(per_word);
            let mut words = vec![0u32; len / row_len * words_per_row];
            for (row, codes) in q.codes.chunks(row_len).enumerate() {
                let row_words = &mut words[row * words_per_row..(row + 1) * words_per_row];
                for (j, &c) in codes.iter().enumerate() {
                    let field = (stored(c) as u32) & mask;
                    row_words[j / per_word] |= field << ((j % per_word) as u32 * q.bits);
                }
            }
            PackedCodes::Words(words)
        }
    };
    let scales = match scales {
        ScaleFormat::F32 => PackedScales::F32(q.scales.clone()),
        ScaleFormat::F16 => PackedScales::F16(q.scales.iter().map(|&s| f16::from_f32(s)).collect()),
    };
    Ok(PackedTensor {
        bits: q.bits,
        quant_type: q.quant_type,
        groups: q.groups,
        len,
        row_len,
        codes,
        scales,
        zero_points: q.zero_points.iter().map(|&z| z - off).collect(),
    })
}

/// Unpacks into codes, f32 scales and zero points (the inverse of [`pack`]).
pub fn unpack(p: &PackedTensor) -> Result<QuantizedTensor> {
    if !PACKED_BITS.contains(&p.bits) || p.row_len == 0 || !p.len.is_multiple_of(p.row_len) {
        return Err(MoqError::InvalidGroups {
            tensor: "unpack".into(),
            len: p.len,
            groups: p.row_len,
        });
    }
    let off = offset(p.bits, p.quant_type);
    let code = |stored: i32| {
        if p.bits == 1 {
            2 * stored - 1
        } else {
            stored + off
        }
    };
    let codes = match &p.codes {
        PackedCodes::Int8(_) if !KERNEL_BITS.contains(&p.bits) => {
            return Err(MoqError::Packed {
                reason: format!("{}-bit codes in the Int8 layout (it holds 1 to 8)", p.bits),
            });
        }
        PackedCodes::Int8(c) => {
            if c.len() != p.len {
                return Err(MoqError::LengthMismatch {
                    what: "int8 codes".into(),
                    expected: p.len,
                    found: c.len(),
                });
            }
            c.iter()
                .map(|&s| code(if p.bits == 1 { i32::from(s) } else { s as i32 }))
                .collect()
        }
        PackedCodes::Words(words) => {
            let per_word = codes_per_word(p.bits);
            let words_per_row = p.row_len.div_ceil(per_word);
            let expected = p.len / p.row_len * words_per_row;
            if words.len() != expected {
                return Err(MoqError::LengthMismatch {
                    what: "packed words".into(),
                    expected,
                    found: words.len(),
                });
            }
            let shift_up = 32 - p.bits;
            let mut codes = Vec::with_capacity(p.len);
            for row in words.chunks(words_per_row) {
                for j in 0..p.row_len {
                    let word = row[j / per_word];
                    let shift = (j % per_word) as u32 * p.bits;
                    let field = if p.bits == 1 {
                        ((word >> shift) & 1) as i32
                    } else {
                        // Sign-extend the b-bit field.
                        ((word << (shift_up - shift)) as i32) >> shift_up
                    };
                    codes.push(code(field));
                }
            }
            codes
        }
    };
    let scales = match &p.scales {
        PackedScales::F32(s) => s.clone(),
        PackedScales::F16(s) => s.iter().map(|s| s.to_f32()).collect(),
    };
    Ok(QuantizedTensor {
        bits: p.bits,
        quant_type: p.quant_type,
        groups: p.groups,
        codes,
        scales,
        zero_points: p.zero_points.iter().map(|&z| z + off).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantizer::{QuantSpec, quantize};

    #[test]
    fn four_bit_layout_is_as_documented() {
        let q = QuantizedTensor {
            bits: 4,
            quant_type: QuantType::Symmetric,
            groups: 1,
            codes: vec![1, -1, 7, -7, 0, 2, 3, 4, 5],
            scales: vec![1.0],
            zero_points: vec![],
        };
        let p = pack(&q, 9, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
        // Nibbles from the lowest: 1, F, 7, 9, 0, 2, 3, 4 | 5.
        assert_eq!(p.words().unwrap(), [0x4320_97F1, 0x0000_0005]);
        assert_eq!(unpack(&p).unwrap(), q);
    }

    #[test]
    fn a_padding_bit_set_is_refused_by_word() {
        // 3-bit codes: 10 a word (bits 30 and 31 always padding), rows of 12 codes: 2 words,
        // the second holding 2 codes (bits 6..32 padding).
        let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        let q = quantize("x", &x, &QuantSpec::new(3, QuantType::Symmetric, 2)).unwrap();
        let p = pack(&q, 12, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
        p.check().unwrap();
        for (word, bit) in [(0, 30), (1, 6), (3, 31)] {
            let mut words = p.words().unwrap().to_vec();
            words[word] |= 1 << bit;
            let bad = PackedTensor {
                codes: PackedCodes::Words(words),
                ..p.clone()
            };
            let e = bad.check().unwrap_err().to_string();
            assert!(
                e.contains(&format!("code word {word} ")) && e.contains("padding"),
                "{e}"
            );
        }
        // A code bit is no padding.
        let mut words = p.words().unwrap().to_vec();
        words[1] ^= 1 << 5;
        assert!(
            PackedTensor {
                codes: PackedCodes::Words(words),
                ..p
            }
            .check()
            .is_ok()
        );
    }

    #[test]
    fn wide_codes_pack_two_or_three_a_word_and_come_back() {
        let x: Vec<f32> = (0..30).map(|i| ((i * 7) % 13) as f32 - 6.3).collect();
        for bits in 9..=16u32 {
            for quant_type in [QuantType::Symmetric, QuantType::Asymmetric] {
                let q = quantize("x", &x, &QuantSpec::new(bits, quant_type, 3)).unwrap();
                let p = pack(&q, 10, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
                let per_word = if bits <= 10 { 3 } else { 2 };
                assert_eq!(p.words().unwrap().len(), 3 * 10usize.div_ceil(per_word));
                p.check().unwrap();
                assert!(p.shape().unwrap().check_kernel().is_err());
                assert_eq!(unpack(&p).unwrap(), q, "{bits} {quant_type:?}");
                assert!(pack(&q, 10, CodeLayout::Int8, ScaleFormat::F32).is_err());
                let as_int8 = PackedTensor {
                    codes: PackedCodes::Int8(vec![0; 30]),
                    ..p.clone()
                };
                assert!(as_int8.check().is_err() && unpack(&as_int8).is_err());
            }
        }
    }

    #[test]
    fn asymmetric_int8_is_offset() {
        let x: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let q = quantize("x", &x, &QuantSpec::new(8, QuantType::Asymmetric, 1)).unwrap();
        let p = pack(&q, 10, CodeLayout::Int8, ScaleFormat::F32).unwrap();
        assert_eq!(p.int8().unwrap()[0], -128);
        assert_eq!(p.int8().unwrap()[9], 127);
        assert_eq!(p.zero_points, [-128]);
        assert_eq!(unpack(&p).unwrap(), q);
    }

    #[test]
    fn binary_and_bad_input() {
        let q = quantize(
            "x",
            &[1.0f32, -2.0, 0.0, 3.0],
            &QuantSpec::new(1, QuantType::Symmetric, 1),
        )
        .unwrap();
        let p = pack(&q, 4, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
        assert_eq!(p.words().unwrap(), [0b1101]);
        assert_eq!(unpack(&p).unwrap(), q);
        let wide = quantize(
            "x",
            &[1.0f32, 2.0],
            &QuantSpec::new(9, QuantType::Symmetric, 1),
        )
        .unwrap();
        assert!(pack(&wide, 2, CodeLayout::Int8, ScaleFormat::F32).is_err());
        let too_wide = quantize("x", &[1.0f32], &QuantSpec::new(17, QuantType::Symmetric, 1));
        assert!(too_wide.is_err(), "the quantizer itself stops at 16 bits");
        assert!(pack(&q, 3, CodeLayout::Int8, ScaleFormat::F32).is_err());
        let mut too_big = q.clone();
        too_big.codes[0] = 2;
        assert!(pack(&too_big, 4, CodeLayout::Int8, ScaleFormat::F32).is_err());
        let mut broken = p.clone();
        broken.codes = PackedCodes::Words(vec![]);
        assert!(unpack(&broken).is_err());
    }

    #[test]
    fn f16_scales_round() {
        let q = quantize(
            "x",
            &[0.1f32, -0.3, 0.2],
            &QuantSpec::new(8, QuantType::Symmetric, 1),
        )
        .unwrap();
        let p = pack(&q, 3, CodeLayout::Int8, ScaleFormat::F16).unwrap();
        assert_eq!(p.size_bytes(), 3 + 2);
        let back = unpack(&p).unwrap();
        assert_eq!(back.codes, q.codes);
        assert_eq!(back.scales[0], f16::from_f32(q.scales[0]).to_f32());
    }
}

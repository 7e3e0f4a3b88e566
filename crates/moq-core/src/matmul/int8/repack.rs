//! [`TiledWeight`]: a packed weight repacked once into the order the integer-dot kernel reads.

use super::job::{BLOCK, Storage, TILE};
use crate::config::QuantType;
use crate::error::{MoqError, Result};
use crate::matmul::{PackedMatrix, Scales, Word};

/// A `[k, n]` weight in tiles of 8 columns for [`matmul_i8`](super::matmul_i8): tile `t`
/// holds columns `8t..8t + 8` (zeros past `n`) down all `k` rows (padded to a block of 32), its
/// codes in the kernel's order; the group scales (and zero points) as f32, lane by lane (the
/// scale of row `kk` in lane `a` at `a · k + kk`), the order the activations read them. Built from a
/// checked [`PackedMatrix`], so it holds the same codes: a copy of the codes' size (twice it
/// for 2- and 3-bit weights, whose nibbles hold one code each).
#[derive(Clone, Debug)]
pub struct TiledWeight {
    pub(super) k: usize,
    pub(super) n: usize,
    pub(super) k_pad: usize,
    pub(super) tiles: usize,
    /// Activation lanes: places of a group along a row.
    pub(super) lanes: usize,
    pub(super) storage: Storage,
    pub(super) codes: Vec<u8>,
    /// `[lanes][k]`: row `kk`'s group scale in lane `a`.
    pub(super) scales: Vec<f32>,
    /// `[lanes][k]` zero points for asymmetric grids, empty for symmetric ones.
    pub(super) zero_points: Vec<f32>,
}

impl TiledWeight {
    /// Repacks `w`. An error when a group would split a tile of 8 columns (see the module).
    pub fn new<W: Word>(w: &PackedMatrix<W>) -> Result<Self> {
        let shape = w.shape;
        let (k, n, group_len) = (shape.rows, shape.row_len, shape.group_len());
        let lanes = if n.is_multiple_of(group_len) && group_len.is_multiple_of(TILE) {
            n / group_len
        } else if group_len.is_multiple_of(n) {
            1
        } else {
            return Err(MoqError::UnsupportedMode {
                tensor: "int8-activation matmul".into(),
                reason: format!(
                    "groups of {group_len} in rows of {n} split tiles of {TILE} columns: it \
                     needs groups of a multiple of {TILE} that divide a row, or whole rows"
                ),
            });
        };
        let storage = Storage::of(shape.bits);
        let (k_pad, tiles) = (k.div_ceil(BLOCK) * BLOCK, n.div_ceil(TILE));
        let fill = match storage {
            Storage::Nibbles => 0x88,
            Storage::Bytes => 0,
        };
        let mut out = Self {
            k,
            n,
            k_pad,
            tiles,
            lanes,
            storage,
            codes: vec![fill; tiles * storage.tile_bytes(k_pad)],
            scales: Vec::with_capacity(lanes * k),
            zero_points: Vec::new(),
        };
        // Row `kk`'s group in lane `a`.
        let group = |kk: usize, a: usize| {
            if lanes == 1 {
                kk * n / group_len
            } else {
                kk * lanes + a
            }
        };
        for (a, kk) in (0..lanes).flat_map(|a| (0..k).map(move |kk| (a, kk))) {
            let g = group(kk, a);
            out.scales.push(match w.scales {
                Scales::F32(s) => s[g],
                Scales::F16(s) => s[g].to_f32(),
            });
            if shape.quant_type == QuantType::Asymmetric {
                out.zero_points.push(w.zero_points[g] as f32);
            }
        }
        out.fill_codes(w);
        Ok(out)
    }

    /// Writes every code of `w` at its place in the tiles.
    fn fill_codes<W: Word>(&mut self, w: &PackedMatrix<W>) {
        let (bits, per_word) = (w.shape.bits, w.shape.codes_per_word());
        let words_per_row = w.shape.words_per_row();
        let tile_bytes = self.storage.tile_bytes(self.k_pad);
        for kk in 0..self.k {
            let row = &w.words[kk * words_per_row..(kk + 1) * words_per_row];
            for col in 0..self.n {
                let code = signed_field(row[col / per_word].bits(), bits, col % per_word);
                let (t, j) = (col / TILE, col % TILE);
                let base = t * tile_bytes;
                match self.storage {
                    Storage::Nibbles => {
                        let (step, r) = (kk / 8, kk % 8);
                        let byte = &mut self.codes[base + step * 32 + 4 * j + r % 4];
                        let u = (code + 8) as u8;
                        *byte = if r < 4 {
                            (*byte & 0xf0) | u
                        } else {
                            (*byte & 0x0f) | (u << 4)
                        };
                    }
                    Storage::Bytes => {
                        let (step, r) = (kk / 4, kk % 4);
                        self.codes[base + step * 32 + 4 * j + r] = code as i8 as u8;
                    }
                }
            }
        }
    }

    /// Rows `k` and columns `n` of the weight.
    pub fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// Bytes of the repacked codes and the scales: what one call reads.
    pub fn bytes(&self) -> usize {
        self.codes.len() + 4 * (self.scales.len() + self.zero_points.len())
    }

    /// The activation lane of tile `t`: the place along a row of the group its columns lie in.
    #[inline]
    pub(super) fn lane_of_tile(&self, t: usize) -> usize {
        t * TILE * self.lanes / self.n
    }
}

/// Field `j` of a word of `bits`-bit two's complement codes as a signed number (binary codes:
/// bit 1 is +1, bit 0 is −1).
fn signed_field(word: u32, bits: u32, j: usize) -> i32 {
    let j = j as u32;
    if bits == 1 {
        ((word >> j) & 1) as i32 * 2 - 1
    } else {
        ((word << (32 - (j + 1) * bits)) as i32) >> (32 - bits)
    }
}

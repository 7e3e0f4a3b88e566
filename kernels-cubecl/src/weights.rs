//! Quantized tensors on the device ([`DeviceWeights`]): uploaded from a `moq-core`
//! [`PackedTensor`], or quantized from a float tensor on the device ([`quantize`]); downloaded
//! back, or dequantized on the device.
//!
//! On the device codes are always in `moq-core`'s `Packed32` layout: 8-bit codes four per word
//! (for rows whose length is a multiple of 4 these are the bytes of the `Int8` layout; WGSL has
//! no 8-bit storage), 4-bit codes eight per word, any width 1–8. Scales are f32 or f16.

use cubecl::prelude::*;
use cubecl::server::Handle;
use half::f16;
use moq_core::{
    CodeLayout, PackedScales, PackedShape, PackedTensor, QuantSpec, QuantType, ScaleFormat,
};

use crate::error::{KernelError, Result};
use crate::quant::{
    GRID, SCALE, UNITS_ELEMENTWISE, ZERO, cube_count, quantize_words, read, unit_index,
};

/// A quantized `[rows, row_len]` tensor on the device, ready for [`crate::matmul()`].
#[derive(Clone, Debug)]
pub struct DeviceWeights {
    pub(crate) words: Handle,
    pub(crate) scales: Handle,
    pub(crate) zero_points: Handle,
    /// The geometry: `[k, n]` (rows are the inner dimension `k` of `y = x · W`), bits, grid
    /// type and groups.
    pub(crate) shape: PackedShape,
    /// How the scales are stored.
    pub scale_format: ScaleFormat,
}

impl DeviceWeights {
    /// The geometry: `[k, n]`, bits, grid type and groups.
    pub fn shape(&self) -> PackedShape {
        self.shape
    }

    /// Elements per group.
    pub fn group_size(&self) -> usize {
        self.shape().group_len()
    }

    /// Words per row.
    pub fn words_per_row(&self) -> usize {
        self.shape().words_per_row()
    }

    /// Bytes of codes, scales and zero points on the device.
    pub fn size_bytes(&self) -> usize {
        let shape = self.shape();
        shape.words() * 4 + shape.scale_bytes(self.scale_format) + shape.zero_points() * 4
    }

    /// Wraps buffers already on the device: `words` (`k` rows of `ceil(n / (32 / bits))` u32
    /// words, `moq-core`'s `Packed32` layout), `scales` (one per group, in `scale_format`) and
    /// `zero_points` (one `i32` per group for asymmetric grids, at least one otherwise). The
    /// buffers' sizes are checked against the shape, and the shape against the kernels' 32-bit
    /// indexing, so the kernels never read out of bounds.
    pub fn from_parts(
        words: Handle,
        scales: Handle,
        zero_points: Handle,
        shape: PackedShape,
        scale_format: ScaleFormat,
    ) -> Result<Self> {
        shape.check_indexable("packed weight")?;
        shape.check_kernel()?;
        let (k, n) = (shape.rows, shape.row_len);
        for (what, handle, bytes) in [
            ("words", &words, shape.words() * 4),
            ("scales", &scales, shape.scale_bytes(scale_format)),
            ("zero points", &zero_points, shape.zero_points().max(1) * 4),
        ] {
            if (handle.size_in_used() as usize) < bytes {
                return Err(KernelError::Layout {
                    reason: format!(
                        "{what}: {} bytes on the device, {bytes} needed for a [{k}, {n}] weight",
                        handle.size_in_used()
                    ),
                });
            }
        }
        Ok(Self {
            words,
            scales,
            zero_points,
            shape,
            scale_format,
        })
    }

    /// Uploads a packed tensor (`Packed32` as is; `Int8` is repacked to 8-bit `Packed32`).
    /// Rows are the packed tensor's rows (`row_len` elements each).
    pub fn upload<R: Runtime>(client: &ComputeClient<R>, packed: &PackedTensor) -> Result<Self> {
        let layout_error = |e: moq_core::MoqError| KernelError::Layout {
            reason: e.to_string(),
        };
        packed.check().map_err(layout_error)?;
        let packed = packed
            .to_layout(CodeLayout::Packed32)
            .map_err(layout_error)?;
        let shape = packed.shape().map_err(layout_error)?;
        let words = packed.words().unwrap_or_default();
        let scales = match &packed.scales {
            PackedScales::F32(s) => client.create_from_slice(f32::as_bytes(s)),
            PackedScales::F16(s) => client.create_from_slice(f16::as_bytes(s)),
        };
        // Buffers are never empty (a zero-size binding is invalid on some APIs).
        let nonempty = |v: &[u32]| if v.is_empty() { vec![0] } else { v.to_vec() };
        let zero_points: Vec<i32> = if packed.zero_points.is_empty() {
            vec![0]
        } else {
            packed.zero_points.clone()
        };
        Self::from_parts(
            client.create_from_slice(u32::as_bytes(&nonempty(words))),
            scales,
            client.create_from_slice(i32::as_bytes(&zero_points)),
            shape,
            packed.scale_format(),
        )
    }

    /// Reads the codes, scales and zero points back into a [`PackedTensor`] in `layout`.
    pub fn download<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        layout: CodeLayout,
    ) -> Result<PackedTensor> {
        let mut words = read::<R, u32>(client, self.words.clone())?;
        words.truncate(self.shape.words());
        // Buffers hold at least `groups` entries (checked when built); a pool may round up.
        let scales = match self.scale_format {
            ScaleFormat::F32 => PackedScales::F32(
                read::<R, f32>(client, self.scales.clone())?[..self.shape.groups].to_vec(),
            ),
            ScaleFormat::F16 => PackedScales::F16(
                read::<R, f16>(client, self.scales.clone())?[..self.shape.groups].to_vec(),
            ),
        };
        let zero_points = match self.shape.quant_type {
            QuantType::Asymmetric => {
                let mut z = read::<R, i32>(client, self.zero_points.clone())?;
                z.truncate(self.shape.groups);
                z
            }
            QuantType::Symmetric => Vec::new(),
        };
        let packed = PackedTensor {
            bits: self.shape.bits,
            quant_type: self.shape.quant_type,
            groups: self.shape.groups,
            len: self.shape.rows * self.shape.row_len,
            row_len: self.shape.row_len,
            codes: moq_core::PackedCodes::Words(words),
            scales,
            zero_points,
        };
        match layout {
            CodeLayout::Packed32 => Ok(packed),
            CodeLayout::Int8 => packed
                .to_layout(layout)
                .map(std::borrow::Cow::into_owned)
                .map_err(|e| KernelError::Layout {
                    reason: e.to_string(),
                }),
        }
    }

    /// Dequantizes on the device into a new `[k, n]` tensor of `F`.
    pub fn dequantize<R: Runtime, F: Float + CubeElement>(
        &self,
        client: &ComputeClient<R>,
    ) -> Handle {
        let len = self.shape.rows * self.shape.row_len;
        let out = client.empty(len.max(1) * size_of::<F>());
        if len == 0 {
            return out;
        }
        let asymmetric = self.shape.quant_type == QuantType::Asymmetric;
        let zero_len = if asymmetric { self.shape.groups } else { 1 };
        // SAFETY: `from_parts`/`upload`/`quantize` checked that the buffers hold `shape.words()`
        // words, `groups` scales and `zero_len` zero points; `out` was allocated with `len`;
        // units past `len` return at once.
        macro_rules! launch {
            ($s:ty) => {
                unsafe {
                    dequantize_kernel::launch_unchecked::<F, $s, R>(
                        client,
                        cube_count(client, len, UNITS_ELEMENTWISE),
                        CubeDim::new_1d(UNITS_ELEMENTWISE),
                        ArrayArg::from_raw_parts(self.words.clone(), self.shape.words()),
                        ArrayArg::from_raw_parts(self.scales.clone(), self.shape.groups),
                        ArrayArg::from_raw_parts(self.zero_points.clone(), zero_len),
                        ArrayArg::from_raw_parts(out.clone(), len),
                        len as u32,
                        self.shape.row_len as u32,
                        self.words_per_row() as u32,
                        self.group_size() as u32,
                        self.shape.bits,
                        asymmetric,
                    )
                }
            };
        }
        match self.scale_format {
            ScaleFormat::F32 => launch!(f32),
            ScaleFormat::F16 => launch!(f16),
        }
        out
    }
}

/// Quantizes a device tensor of `len` elements of `F` (rows of `row_len`) to codes on the
/// device, with the grids of `moq_core::quantize` (nearest or stochastic, 1–8 bits); scales are
/// stored as `scale_format`. `name` names the tensor in errors.
pub fn quantize<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    input: &Handle,
    len: usize,
    row_len: usize,
    name: &str,
    spec: &QuantSpec,
    scale_format: ScaleFormat,
) -> Result<DeviceWeights> {
    let codes = quantize_words::<R, F>(client, input, len, row_len, name, spec)?;
    let groups = codes.grids.groups;
    let mut grids = read::<R, f32>(client, codes.grids.grids.clone())?;
    grids.truncate(groups * GRID);
    let scales: Vec<f32> = grids.chunks(GRID).map(|g| g[SCALE]).collect();
    let offset = 1i32 << (spec.bits - 1);
    let zero_points: Vec<i32> = match spec.quant_type {
        QuantType::Asymmetric => grids
            .chunks(GRID)
            .map(|g| g[ZERO] as i32 - offset)
            .collect(),
        QuantType::Symmetric => vec![0],
    };
    let scales = match scale_format {
        ScaleFormat::F32 => client.create_from_slice(f32::as_bytes(&scales)),
        ScaleFormat::F16 => {
            let half: Vec<f16> = scales.iter().map(|&s| f16::from_f32(s)).collect();
            client.create_from_slice(f16::as_bytes(&half))
        }
    };
    Ok(DeviceWeights {
        words: codes.words,
        scales,
        zero_points: client.create_from_slice(i32::as_bytes(&zero_points)),
        shape: codes.shape,
        scale_format,
    })
}

/// Field `j` of a packed word as a signed code (binary: bit 1 is +1, bit 0 is −1).
#[cube]
pub(crate) fn field(word: u32, j: u32, #[comptime] bits: u32) -> f32 {
    if comptime!(bits == 1) {
        f32::cast_from(((word >> j) & 1) * 2) - 1.0
    } else {
        // Shift the field to the top, then arithmetic-shift it back: sign extension.
        let top = i32::cast_from(word << (32 - (j + 1) * bits));
        f32::cast_from(top >> comptime!((32 - bits) as i32))
    }
}

/// One unit per element: `(c − z')·s`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn dequantize_kernel<F: Float, S: Float>(
    words: &Array<u32>,
    scales: &Array<S>,
    zero_points: &Array<i32>,
    out: &mut Array<F>,
    len: u32,
    row_len: u32,
    words_per_row: u32,
    group_size: u32,
    #[comptime] bits: u32,
    #[comptime] asymmetric: bool,
) {
    let i = unit_index();
    if i >= len {
        terminate!();
    }
    let per_word = comptime!(32 / bits);
    let row = i / row_len;
    let col = i % row_len;
    let word = words[(row * words_per_row + col / per_word) as usize];
    let g = (i / group_size) as usize;
    let code = field(word, col % per_word, bits);
    let q = if asymmetric {
        code - f32::cast_from(zero_points[g])
    } else {
        code
    };
    out[i as usize] = F::cast_from(q * f32::cast_from(scales[g]));
}

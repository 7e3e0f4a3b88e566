//! Low-bit-weight matmul `y = x · dequant(W)`: `x` is `[m, k]` f32, `W` is `[k, n]` stored in
//! moq-core's [`moq_core::CodeLayout::Packed32`] layout (any width 1–8, rows padded to whole words) with
//! one f32 scale per group and, for asymmetric grids, one zero point per group.
//!
//! This is the reference kernel: one unit per `(row of x, word of a row of W)`, which reads its
//! column of words once and accumulates the `32 / b` outputs of the word in registers, in f32.
//! It is correct for any shape; the tuned GEMV and tiled kernels build on its tests.

use cubecl::prelude::*;
use cubecl::server::Handle;
use moq_core::{PackedScales, PackedTensor, QuantType};

use crate::error::{KernelError, Result};

/// Packed weights on the device, ready for [`matmul`].
pub struct DeviceWeights {
    words: Handle,
    scales: Handle,
    zero_points: Handle,
    /// Rows of `W` (the inner dimension `k`).
    pub k: usize,
    /// Columns of `W` (outputs `n`).
    pub n: usize,
    /// Bit width of the codes.
    pub bits: u32,
    group_size: usize,
    asymmetric: bool,
    words_len: usize,
    groups: usize,
}

impl DeviceWeights {
    /// Uploads a packed `[k, n]` weight (`row_len = n`).
    pub fn upload<R: Runtime>(client: &ComputeClient<R>, packed: &PackedTensor) -> Result<Self> {
        let bad = |reason: String| Err(KernelError::Layout { reason });
        let Some(words) = packed.words() else {
            return bad("codes must be in the Packed32 layout".into());
        };
        let PackedScales::F32(scales) = &packed.scales else {
            return bad("scales must be f32".into());
        };
        // Whole rows and groups, and as many words, scales and zero points as the kernel reads.
        if let Err(e) = packed.check() {
            return bad(e.to_string());
        }
        let asymmetric = packed.quant_type == QuantType::Asymmetric;
        let zero_points: Vec<i32> = if asymmetric {
            packed.zero_points.clone()
        } else {
            vec![0]
        };
        Ok(Self {
            words: client.create_from_slice(u32::as_bytes(words)),
            scales: client.create_from_slice(f32::as_bytes(scales)),
            zero_points: client.create_from_slice(i32::as_bytes(&zero_points)),
            k: packed.len / packed.row_len,
            n: packed.row_len,
            bits: packed.bits,
            group_size: packed.len / packed.groups,
            asymmetric,
            words_len: words.len(),
            groups: packed.groups,
        })
    }
}

/// `y = x · dequant(W)` for `x` of `m` rows (`[m, k]`, f32, row-major on the device); returns
/// `y` (`[m, n]`, f32).
pub fn matmul<R: Runtime>(
    client: &ComputeClient<R>,
    x: Handle,
    m: usize,
    w: &DeviceWeights,
) -> Result<Handle> {
    let per_word = 32 / w.bits as usize;
    let words_per_row = w.n.div_ceil(per_word);
    let out = client.empty(m * w.n * size_of::<f32>());
    if m == 0 || w.n == 0 {
        return Ok(out);
    }
    let cube_dim = CubeDim::new_2d(32, 4);
    let cube_count = CubeCount::Static(words_per_row.div_ceil(32) as u32, m.div_ceil(4) as u32, 1);
    unsafe {
        matmul_kernel::launch_unchecked::<R>(
            client,
            cube_count,
            cube_dim,
            ArrayArg::from_raw_parts(x, m * w.k),
            ArrayArg::from_raw_parts(w.words.clone(), w.words_len),
            ArrayArg::from_raw_parts(w.scales.clone(), w.groups),
            ArrayArg::from_raw_parts(
                w.zero_points.clone(),
                if w.asymmetric { w.groups } else { 1 },
            ),
            ArrayArg::from_raw_parts(out.clone(), m * w.n),
            m as u32,
            w.k as u32,
            w.n as u32,
            words_per_row as u32,
            w.group_size as u32,
            w.bits,
            w.asymmetric,
        )
    };
    Ok(out)
}

#[cube(launch_unchecked)]
fn matmul_kernel(
    x: &Array<f32>,
    words: &Array<u32>,
    scales: &Array<f32>,
    zero_points: &Array<i32>,
    y: &mut Array<f32>,
    m: u32,
    k: u32,
    n: u32,
    words_per_row: u32,
    group_size: u32,
    #[comptime] bits: u32,
    #[comptime] asymmetric: bool,
) {
    let per_word = comptime!(32 / bits);
    let word_col = ABSOLUTE_POS_X;
    let row = ABSOLUTE_POS_Y;
    if word_col >= words_per_row || row >= m {
        terminate!();
    }
    let mut acc = Array::<f32>::new(comptime!(per_word as usize));
    #[unroll]
    for j in 0..per_word {
        acc[j as usize] = 0.0;
    }
    for kk in 0..k {
        let xv = x[(row * k + kk) as usize];
        let word = words[(kk * words_per_row + word_col) as usize];
        #[unroll]
        for j in 0..per_word {
            let col = word_col * per_word + j;
            if col < n {
                let g = ((kk * n + col) / group_size) as usize;
                let code = if comptime!(bits == 1) {
                    // Binary: bit 1 is +1, bit 0 is −1.
                    (((word >> j) & 1) * 2) as f32 - 1.0
                } else {
                    // Shift the field to the top, then arithmetic-shift it back: sign extension.
                    let top = i32::cast_from(word << (32 - (j + 1) * bits));
                    f32::cast_from(top >> (32 - bits) as i32)
                };
                let q = if comptime!(asymmetric) {
                    code - f32::cast_from(zero_points[g])
                } else {
                    code
                };
                acc[j as usize] += xv * q * scales[g];
            }
        }
    }
    #[unroll]
    for j in 0..per_word {
        let col = word_col * per_word + j;
        if col < n {
            y[(row * n + col) as usize] = acc[j as usize];
        }
    }
}

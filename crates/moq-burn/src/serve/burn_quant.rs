//! Conversion to burn's own quantized tensors ([`QuantScheme`]), where the layouts correspond,
//! so a MoQ export can also run through burn's quantized path.
//!
//! burn 0.21 quantizes symmetrically (`Q8S` in [−127, 127], `Q4S` in [−7, 7], value
//! `q · scale`), per tensor or per rectangular block (each side at most 255), with f32 scales.
//! A MoQ tensor corresponds when its grid is symmetric with 8 or 4 bits and its groups are one
//! whole tensor or
//! blocks: a group of `g` values along a row (`g` divides the row and `g ≤ 255`), or, for a 2-d
//! tensor, whole rows (`g` a multiple of the row length `n ≤ 255`, `g / n ≤ 255`). Anything
//! else is an error that says which condition fails. f16 scales are widened to f32 (exact).
//!
//! Not converted: MoQ's 2-bit ternary grid has the layout of burn's `Q2S`, but burn 0.21's
//! matmul with a `Q2S` weight on burn-wgpu gives wrong results (its `dequantize()` is right;
//! seen on lavapipe while testing this module), so 2-bit tensors are refused rather than handed
//! to a path that computes wrong answers. burn's NdArray backend loads `Q8S` only.

use burn::tensor::quantization::{
    BlockSize, QuantLevel, QuantMode, QuantParam, QuantScheme, QuantStore, QuantValue,
};
use burn::tensor::{Bytes, DType, TensorData};
use moq_core::{PackedScales, PackedTensor, QuantType, unpack};

use crate::error::{MoqBurnError, Result};

/// burn's [`QuantScheme`] for `packed` (of `shape`), if the layouts correspond.
pub fn burn_scheme(packed: &PackedTensor, shape: &[usize]) -> Result<QuantScheme> {
    let bad = |reason: String| {
        Err(MoqBurnError::Export {
            reason: format!("no burn quantization scheme matches: {reason}"),
        })
    };
    packed.check()?;
    if shape.iter().product::<usize>() != packed.len
        || shape.last().copied().unwrap_or(0) != packed.row_len
    {
        return bad(format!(
            "shape {shape:?} does not hold {} values in rows of {}",
            packed.len, packed.row_len
        ));
    }
    if packed.quant_type != QuantType::Symmetric {
        return bad("burn's quantized tensors are symmetric only".into());
    }
    let value = match packed.bits {
        8 => QuantValue::Q8S,
        4 => QuantValue::Q4S,
        2 => {
            return bad(
                "2-bit codes (burn 0.21's Q2S matmul on wgpu gives wrong results; see the \
                 module docs)"
                    .into(),
            );
        }
        bits => return bad(format!("{bits}-bit codes (burn has 8 and 4 bits)")),
    };
    let (group, n) = (packed.len / packed.groups, packed.row_len);
    let rank = shape.len();
    let level = if packed.groups == 1 {
        QuantLevel::Tensor
    } else if n.is_multiple_of(group) && group <= 255 {
        let mut block = vec![1u8; rank];
        block[rank - 1] = group as u8;
        QuantLevel::Block(BlockSize::new(block))
    } else if rank == 2 && group.is_multiple_of(n) && n <= 255 && group / n <= 255 {
        QuantLevel::Block(BlockSize::new([(group / n) as u8, n as u8]))
    } else {
        return bad(format!(
            "groups of {group} values in rows of {n} are not blocks of at most 255 per side"
        ));
    };
    Ok(QuantScheme::default()
        .with_value(value)
        .with_level(level)
        .with_mode(QuantMode::Symmetric)
        .with_store(QuantStore::PackedU32(0))
        .with_param(QuantParam::F32))
}

/// `packed` (of `shape`) as burn quantized tensor data ([`burn_scheme`]): load it with
/// `Tensor::from_data` on a backend with quantization support; `dequantize()` gives the values
/// of `moq_core::dequantize` exactly.
pub fn to_burn_data(packed: &PackedTensor, shape: &[usize]) -> Result<TensorData> {
    let scheme = burn_scheme(packed, shape)?;
    let q = unpack(packed)?;
    let bits = packed.bits as usize;
    let per_word = 32 / bits;
    let mask = (1u32 << bits) - 1;
    // burn packs the flat values (no row padding), value j of a word at bits [j·b, j·b + b).
    let mut bytes: Vec<u8> = q
        .codes
        .chunks(per_word)
        .map(|codes| {
            codes
                .iter()
                .enumerate()
                .fold(0u32, |w, (j, &c)| w | ((c as u32 & mask) << (j * bits)))
        })
        .flat_map(u32::to_le_bytes)
        .collect();
    let scales: Vec<f32> = match &packed.scales {
        PackedScales::F32(s) => s.clone(),
        PackedScales::F16(s) => s.iter().map(|v| v.to_f32()).collect(),
    };
    let scales = match scheme.level {
        QuantLevel::Tensor => vec![scales[0]],
        QuantLevel::Block(_) => scales,
    };
    bytes.extend(scales.iter().flat_map(|s| s.to_le_bytes()));
    Ok(TensorData::from_bytes(
        Bytes::from_bytes_vec(bytes),
        shape.to_vec(),
        DType::QFloat(scheme),
    ))
}

//! The host side: checks the spec and the buffers, then launches the passes; the only read back
//! is the non-finite count.

use cubecl::prelude::*;
use cubecl::server::Handle;
use moq_core::{PackedShape, QuantSpec, QuantType, Rounding};

use super::kernels::{
    fake_quantize_kernel, grid_kernel, merge_kernel, quantize_kernel, stats_kernel,
};
use super::*;
use crate::error::{KernelError, Result};

/// Cubes of `per_cube` units covering `units` units: cubecl's element-wise count, spread over
/// the device's per-dimension limits (kernels index with [`unit_index`] or `CUBE_POS`).
pub(crate) fn cube_count<R: Runtime>(
    client: &ComputeClient<R>,
    units: usize,
    per_cube: u32,
) -> CubeCount {
    cubecl::calculate_cube_count_elemwise(client, units.max(1), CubeDim::new_1d(per_cube))
}

/// Checks that a device buffer holds `len` elements of `elem_size` bytes, so a kernel given
/// this handle and length cannot read past its end.
pub(crate) fn check_buffer(
    what: &str,
    handle: &Handle,
    len: usize,
    elem_size: usize,
) -> Result<()> {
    let found = handle.size_in_used() as usize / elem_size;
    if found < len {
        return Err(KernelError::Shape {
            what: what.to_string(),
            expected: len,
            found,
        });
    }
    Ok(())
}

/// Per-group grids computed on the device, and what the apply kernels need with them.
pub(crate) struct DeviceGrids {
    pub grids: Handle,
    pub groups: usize,
    pub group_len: usize,
    pub kind: GridKind,
    pub keys: (u32, u32),
    /// Elements per vectorised load: divides the group length.
    pub width: usize,
}

/// The widest vector (in elements of `elem_size` bytes) the device loads at once that divides
/// `group_len`, so no vector straddles two groups, and that the buffer's start is aligned to
/// (a tensor can be a view into a larger buffer).
pub(crate) fn vector_width<R: Runtime>(
    client: &ComputeClient<R>,
    input: &Handle,
    elem_size: usize,
    group_len: usize,
) -> usize {
    let offset = input.offset_start.unwrap_or(0) as usize;
    client
        .io_optimized_vector_sizes(elem_size)
        .find(|&w| group_len.is_multiple_of(w) && offset.is_multiple_of(w * elem_size))
        .unwrap_or(1)
}

/// Steps 1 and 2: checks the spec, computes every group's grid, and fails on non-finite input.
pub(crate) fn device_grids<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    input: &Handle,
    len: usize,
    name: &str,
    spec: &QuantSpec,
) -> Result<DeviceGrids> {
    let group_len = spec.check(name, len)?;
    moq_core::check_indexable(name, len)?;
    check_buffer(name, input, len, size_of::<F>())?;
    let groups = spec.groups;
    let width = vector_width::<R>(client, input, size_of::<F>(), group_len);
    let pieces = group_len.div_ceil(SPAN).max(1);
    let passes = GridPasses {
        client,
        input,
        len,
        groups,
        group_len,
        pieces,
        width,
        grids: client.empty(groups.max(1) * GRID * size_of::<f32>()),
        bad: client.create_from_slice(u32::as_bytes(&[0])),
        spec,
    };
    let kind = GridKind::of(spec.bits);
    if len > 0 {
        let merged = passes.stats::<F>(false);
        match kind {
            GridKind::Binary => passes.grid(merged, GridStep::Binary),
            GridKind::Ternary => {
                passes.grid(merged, GridStep::TernaryThreshold);
                passes.grid(passes.stats::<F>(true), GridStep::TernaryAlpha);
            }
            GridKind::Linear => passes.grid(merged, GridStep::Linear),
        }
        let bad = read::<R, u32>(client, passes.bad.clone())?;
        if bad[0] != 0 {
            return Err(KernelError::NonFinite {
                tensor: name.to_string(),
            });
        }
    }
    let keys = match spec.rounding {
        Rounding::Stochastic => {
            let k = spec.noise.keys();
            (k.k0, k.k1)
        }
        Rounding::Nearest => (0, 0),
    };
    Ok(DeviceGrids {
        grids: passes.grids,
        groups,
        group_len,
        kind,
        keys,
        width,
    })
}

/// The statistics and grid passes of [`device_grids`] over one checked input: `len` elements
/// in `groups` groups of `group_len`, each read in `pieces` pieces of `width`-element vectors.
struct GridPasses<'a, R: Runtime> {
    client: &'a ComputeClient<R>,
    input: &'a Handle,
    len: usize,
    groups: usize,
    group_len: usize,
    pieces: usize,
    width: usize,
    /// One grid record per group.
    grids: Handle,
    /// The non-finite flag.
    bad: Handle,
    spec: &'a QuantSpec,
}

impl<R: Runtime> GridPasses<'_, R> {
    /// One statistics pass (of |x| past each group's threshold when `past_threshold`): every
    /// piece's partial, merged to one per group.
    fn stats<F: Float + CubeElement>(&self, past_threshold: bool) -> Handle {
        let (client, groups, total) = (self.client, self.groups, self.groups * self.pieces);
        let partials = client.empty(total * PARTIAL * size_of::<f32>());
        // SAFETY: `input` holds `len` elements (checked by `device_grids`), read as
        // `len / width` vectors (`width` divides the group length, hence `len`); `grids` and
        // `partials` were allocated with the lengths given; every index is below `total`.
        unsafe {
            stats_kernel::launch_unchecked::<F, R>(
                client,
                cube_count(client, total * UNITS as usize, UNITS),
                CubeDim::new_1d(UNITS),
                self.width,
                ArrayArg::from_raw_parts(self.input.clone(), self.len / self.width),
                ArrayArg::from_raw_parts(self.grids.clone(), groups * GRID),
                ArrayArg::from_raw_parts(partials.clone(), total * PARTIAL),
                self.group_len as u32,
                self.pieces as u32,
                total as u32,
                past_threshold,
                self.width as u32,
            )
        };
        self.merge(partials)
    }

    /// Each group's `pieces` partials merged, 256 at a time, down to one.
    fn merge(&self, partials: Handle) -> Handle {
        let (client, groups) = (self.client, self.groups);
        let (mut current, mut count) = (partials, self.pieces);
        while count > 1 {
            let next_count = count.div_ceil(UNITS as usize);
            let next = client.empty(groups * next_count * PARTIAL * size_of::<f32>());
            // SAFETY: both buffers were allocated here with the lengths given; the kernel
            // reads input partials below `pieces_in` of each group only.
            unsafe {
                merge_kernel::launch_unchecked::<R>(
                    client,
                    cube_count(client, groups * next_count * UNITS as usize, UNITS),
                    CubeDim::new_1d(UNITS),
                    ArrayArg::from_raw_parts(current, groups * count * PARTIAL),
                    ArrayArg::from_raw_parts(next.clone(), groups * next_count * PARTIAL),
                    count as u32,
                    next_count as u32,
                    (groups * next_count) as u32,
                )
            };
            (current, count) = (next, next_count);
        }
        current
    }

    /// One grid step from the merged statistics into `grids`.
    fn grid(&self, merged: Handle, step: GridStep) {
        let groups = self.groups;
        // SAFETY: `merged` holds one partial per group and `grids` one record per group, both
        // allocated for `groups`; units past `groups` return at once.
        unsafe {
            grid_kernel::launch_unchecked::<R>(
                self.client,
                cube_count(self.client, groups, 64),
                CubeDim::new_1d(64),
                ArrayArg::from_raw_parts(merged, groups * PARTIAL),
                ArrayArg::from_raw_parts(self.grids.clone(), groups * GRID),
                ArrayArg::from_raw_parts(self.bad.clone(), 1),
                groups as u32,
                self.group_len as u32,
                step,
                self.spec.bits.max(3),
                self.spec.quant_type == QuantType::Symmetric,
            )
        }
    }
}

/// Reads a buffer back to the host.
pub(crate) fn read<R: Runtime, E: CubeElement>(
    client: &ComputeClient<R>,
    handle: Handle,
) -> Result<Vec<E>> {
    let bytes = client.read_one(handle).map_err(|e| KernelError::Read {
        message: format!("{e:?}"),
    })?;
    Ok(E::from_bytes(&bytes).to_vec())
}

/// Fused fake quantization of a device tensor of `len` elements of `F` (f32, f16 or bf16):
/// returns a new tensor holding `ρ·x + (1−ρ)·Q(x)` with `ρ = mix_ratio` (0: plain `Q(x)`), the
/// same grids as `moq_core::fake_quantize_mixed` (see the module docs for the last-bit
/// differences). `name` names the tensor in errors.
pub fn fake_quantize<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    input: &Handle,
    len: usize,
    name: &str,
    spec: &QuantSpec,
    mix_ratio: f32,
) -> Result<Handle> {
    if !(0.0..=1.0).contains(&mix_ratio) {
        return Err(moq_core::MoqError::UnsupportedMode {
            tensor: name.to_string(),
            reason: format!("mixing ratio {mix_ratio} is not in [0, 1]"),
        }
        .into());
    }
    let grids = device_grids::<R, F>(client, input, len, name, spec)?;
    let out = client.empty(len * size_of::<F>());
    if len == 0 {
        return Ok(out);
    }
    let (width, vectors) = (grids.width, len / grids.width);
    // SAFETY: `input` holds `len` elements (checked by `device_grids`), `out` was allocated
    // with `len`; both are read as `vectors` vectors of `width`; units past `vectors` return.
    unsafe {
        fake_quantize_kernel::launch_unchecked::<F, R>(
            client,
            cube_count(client, vectors, UNITS_ELEMENTWISE),
            CubeDim::new_1d(UNITS_ELEMENTWISE),
            width,
            ArrayArg::from_raw_parts(input.clone(), vectors),
            ArrayArg::from_raw_parts(grids.grids.clone(), grids.groups * GRID),
            ArrayArg::from_raw_parts(out.clone(), vectors),
            vectors as u32,
            grids.group_len as u32,
            grids.keys.0,
            grids.keys.1,
            mix_ratio,
            grids.kind,
            spec.rounding == Rounding::Stochastic,
            mix_ratio != 0.0,
            width as u32,
        )
    };
    Ok(out)
}

/// Codes of a device tensor in the `Packed32` layout (rows of `row_len` padded to whole words),
/// with the grids they were computed on.
pub(crate) struct DeviceCodes {
    pub words: Handle,
    /// The codes' geometry (`shape.words()` words).
    pub shape: PackedShape,
    pub grids: DeviceGrids,
}

/// Steps 1–3 for codes: the packed words on the device.
pub(crate) fn quantize_words<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    input: &Handle,
    len: usize,
    row_len: usize,
    name: &str,
    spec: &QuantSpec,
) -> Result<DeviceCodes> {
    let shape = PackedShape::of_flat(len, row_len, spec.bits, spec.quant_type, spec.groups)
        .and_then(|shape| shape.check_kernel().map(|()| shape))
        .map_err(|e| KernelError::Layout {
            reason: format!("tensor `{name}`: {e}"),
        })?;
    let grids = device_grids::<R, F>(client, input, len, name, spec)?;
    let (words_per_row, words_len) = (shape.words_per_row(), shape.words());
    let words = client.empty(words_len.max(1) * size_of::<u32>());
    if words_len > 0 {
        // SAFETY: `input` holds `len` elements (checked by `device_grids`), `words` was
        // allocated with `words_len`; a unit reads only the columns `< row_len` of its row.
        unsafe {
            quantize_kernel::launch_unchecked::<F, R>(
                client,
                cube_count(client, words_len, UNITS),
                CubeDim::new_1d(UNITS),
                ArrayArg::from_raw_parts(input.clone(), len),
                ArrayArg::from_raw_parts(grids.grids.clone(), grids.groups * GRID),
                ArrayArg::from_raw_parts(words.clone(), words_len),
                words_len as u32,
                row_len as u32,
                words_per_row as u32,
                grids.group_len as u32,
                grids.keys.0,
                grids.keys.1,
                spec.bits,
                grids.kind,
                spec.rounding == Rounding::Stochastic,
                spec.quant_type == QuantType::Asymmetric,
            )
        };
    }
    Ok(DeviceCodes {
        words,
        shape,
        grids,
    })
}

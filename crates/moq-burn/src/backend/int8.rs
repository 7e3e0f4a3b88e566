//! Int8 activations, the opt-in fast path of the CPU low-bit matmul: [`Activations`], and the
//! weight's second layout that path reads ([`Int8Layout`], a [`TiledWeight`] built once when a
//! weight is asked for it, [`super::PackedWeight::with_activations`]).
//!
//! The f32 path stays the default: exact to float rounding. With int8 activations, the way
//! llama.cpp's Q8 activations and onnxruntime's `MatMulNBits` at accuracy level 4 work, each
//! row of `x` is rounded to int8 per block of 32 inputs before the integer dot products: about
//! 0.5% of the output's norm (the guide's "Inside moq"). It runs for inputs of up to
//! [`moq_core::matmul::INT8_MAX_ROWS`] rows (a decoder step: where it is faster); larger
//! inputs take the exact f32 path. Only backends whose
//! [`super::MoqBackend::int8_activations`] says so run it (NdArray); on the others a weight
//! asked for int8 activations keeps float ones, and [`super::PackedWeight::activations`] says
//! which it has.
//!
//! The tiles are a copy of the codes, kept beside the packed words (which every other path and
//! the record read). They remember the words tensor they were built from (a reference to it,
//! so its storage cannot be reused): a mapper or a record that gives the weight other words
//! leaves tiles that no longer match, and the matmul then takes the f32 path.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{TensorData, try_read_sync};
use moq_core::PackedShape;
use moq_core::matmul::{PackedMatrix, Scales, TiledWeight};

use crate::error::{MoqBurnError, Result};

/// How the CPU low-bit matmul takes its activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activations {
    /// As they come (f32): exact to float rounding. The default.
    #[default]
    F32,
    /// Rounded to int8 per block of 32 inputs, multiplied in integers: faster on the CPU for
    /// inputs of up to [`moq_core::matmul::INT8_MAX_ROWS`] rows (larger ones take the f32
    /// path), about 0.5% error.
    Int8,
}

/// A weight's codes in the tiles of the int8-activation kernel, and the words they came from.
#[derive(Clone)]
pub struct Int8Layout {
    tiles: Arc<TiledWeight>,
    /// The words primitive the tiles were built from (`IntTensor<B>`).
    words: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for Int8Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Int8Layout")
            .field("shape", &self.tiles.shape())
            .field("bytes", &self.tiles.bytes())
            .finish()
    }
}

impl Int8Layout {
    /// The tiles.
    pub fn tiles(&self) -> &TiledWeight {
        &self.tiles
    }

    /// The words primitive the tiles were built from, as type `T` (`None` for another type).
    pub fn words<T: 'static>(&self) -> Option<&T> {
        self.words.downcast_ref()
    }
}

/// The tiles of a weight's parts (read to the host) of geometry `shape`, remembering `words`.
/// An error when its groups split a tile of 8 columns, or a part cannot be read.
pub(super) fn layout<B: Backend>(
    words: IntTensor<B>,
    scales: FloatTensor<B>,
    zero_points: IntTensor<B>,
    shape: PackedShape,
) -> Result<Int8Layout> {
    let word_data = read("words", B::int_into_data(words.clone()))?.convert::<i32>();
    let scales = read("scales", B::float_into_data(scales))?.convert::<f32>();
    let zeros = read("zero points", B::int_into_data(zero_points))?.convert::<i32>();
    let (Ok(w), Ok(z), Ok(s)) = (
        word_data.as_slice::<i32>(),
        zeros.as_slice::<i32>(),
        scales.as_slice::<f32>(),
    ) else {
        return Err(MoqBurnError::Read {
            tensor: "packed weight".into(),
            message: "its parts did not convert to i32 words and f32 scales".into(),
        });
    };
    let z: &[i32] = if shape.zero_points() == 0 { &[] } else { z };
    let tiles = TiledWeight::new(&PackedMatrix::new(shape, w, Scales::F32(s), z)?)?;
    Ok(Int8Layout {
        tiles: Arc::new(tiles),
        words: Arc::new(words),
    })
}

/// A part of the weight read to the host, or an error naming it.
fn read<E: fmt::Debug>(
    what: &str,
    data: impl Future<Output = std::result::Result<TensorData, E>> + Send,
) -> Result<TensorData> {
    let error = |message: String| MoqBurnError::Read {
        tensor: format!("packed weight {what}"),
        message,
    };
    try_read_sync(data)
        .ok_or_else(|| error("this platform cannot read tensors synchronously".into()))?
        .map_err(|e| error(format!("{e:?}")))
}

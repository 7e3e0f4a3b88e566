//! The crate's error type.

use thiserror::Error;

/// What can go wrong computing eigenvalues. Each variant names the block or parameter at fault.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum HessianError {
    /// No blocks were given.
    #[error("no parameter blocks to compute eigenvalues for")]
    NoBlocks,
    /// A block lists no parameters.
    #[error("block `{block}` has no parameters")]
    EmptyBlock {
        /// The block's name.
        block: String,
    },
    /// A block names a parameter the trained model does not have.
    #[error("block `{block}`: the model has no float parameter `{path}`")]
    UnknownParam {
        /// The block's name.
        block: String,
        /// The missing path.
        path: String,
    },
    /// The model built by [`crate::HessianLoss::model`] does not match the trained one.
    #[error(
        "parameter `{path}`: the model built for the Hessian has shape {found:?}, the trained one \
         {expected:?} (HessianLoss::model must build the same architecture)"
    )]
    ShapeMismatch {
        /// The parameter's path.
        path: String,
        /// Shape in the trained model.
        expected: Vec<usize>,
        /// Shape in the model built for the Hessian.
        found: Vec<usize>,
    },
    /// The model built by [`crate::HessianLoss::model`] lacks a parameter of the trained one.
    #[error(
        "parameter `{path}` of the trained model is missing from the model built for the Hessian"
    )]
    MissingParam {
        /// The parameter's path.
        path: String,
    },
    /// The model built by [`crate::HessianLoss::model`] has a parameter the trained one lacks.
    #[error(
        "parameter `{path}` of the model built for the Hessian is not in the trained model \
         (HessianLoss::model must build the same architecture)"
    )]
    ExtraParam {
        /// The parameter's path.
        path: String,
    },
    /// burn cannot differentiate the backward of an op the loss uses (exact products only).
    #[error(
        "block `{block}`: exact Hessian-vector products need the loss differentiated twice, and \
         burn cannot differentiate the backward of an op it uses ({reason}); use \
         HvpMethod::Auto or HvpMethod::FiniteDifference"
    )]
    NotTwiceDifferentiable {
        /// The block's name.
        block: String,
        /// burn's message.
        reason: String,
    },
    /// A vector given for a block has the wrong number of parts.
    #[error("block `{block}`: the vector has {found} parts, one per parameter needs {expected}")]
    VectorParts {
        /// The block's name.
        block: String,
        /// Parameters in the block.
        expected: usize,
        /// Parts given.
        found: usize,
    },
    /// The loss is not a single value.
    #[error("the loss must be a single value (shape [1]), got shape {shape:?}")]
    LossShape {
        /// The shape returned.
        shape: Vec<usize>,
    },
    /// A power-iteration option is out of range.
    #[error("power iteration: `{option}` = {value} is invalid ({reason})")]
    InvalidOption {
        /// The option's name (as in the `eigenvalue` config section).
        option: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        reason: &'static str,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, HessianError>;

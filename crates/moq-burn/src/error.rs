//! The one error type of `moq-burn`.

use thiserror::Error;

/// What can go wrong when setting up or running MoQ on a burn model.
#[derive(Debug, Error)]
pub enum MoqBurnError {
    /// An error of the algorithm itself (config, groups, non-finite values, …).
    #[error(transparent)]
    Core(#[from] moq_core::MoqError),

    /// An error computing Hessian eigenvalues.
    #[error(transparent)]
    Hessian(#[from] moq_hessian::HessianError),

    /// An error of a device kernel (buffer sizes, reading back); burn's cubecl backends only.
    #[error(transparent)]
    Kernel(#[from] moq_kernels::KernelError),

    /// A parameter that `Moq::group_size` cannot split into whole groups.
    #[error(
        "`{tensor}` has {values} values: not a whole number of groups of {group_size} (Moq::group_size)"
    )]
    GroupSize {
        /// The parameter's path.
        tensor: String,
        /// Its number of values.
        values: usize,
        /// The group size asked for.
        group_size: usize,
    },
    /// A module-path pattern that is not well formed.
    #[error("pattern `{pattern}`: {reason}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A pattern that selects no parameter of the model: almost always a typo.
    #[error(
        "pattern `{pattern}` ({role}) matches no parameter of the model; parameter paths look like `{example}`"
    )]
    NoMatch {
        /// The pattern as given.
        pattern: String,
        /// Where it was given (selection, exclusion, layers, bit group).
        role: &'static str,
        /// One real parameter path, to compare with.
        example: String,
    },

    /// The selection leaves no parameter to quantize.
    #[error("no parameter is selected for quantization (the model has {params} float parameters)")]
    NothingSelected {
        /// Float parameters in the model.
        params: usize,
    },

    /// An input whose shape does not fit the layer or weight it is given to.
    #[error("{what}: last dimension {found}, expected {expected}")]
    InputShape {
        /// Which input, with its shape.
        what: String,
        /// The size the weight needs.
        expected: usize,
        /// The size given.
        found: usize,
    },

    /// A tensor could not be read back from its device.
    #[error("tensor `{tensor}`: reading it from the device failed: {message}")]
    Read {
        /// Parameter path.
        tensor: String,
        /// The backend's message.
        message: String,
    },

    /// The model cannot be exported yet.
    #[error("export: {reason}")]
    Export {
        /// Why.
        reason: String,
    },

    /// A saved optimizer state that does not fit the model or is corrupt.
    #[error("saved MoQ state: {reason}")]
    Record {
        /// What is wrong.
        reason: String,
    },

    /// A collective operation between data-parallel peers failed (feature `collective`).
    #[error("collective {operation} on `{what}` failed: {reason}")]
    Collective {
        /// The operation (`all-reduce`).
        operation: &'static str,
        /// What was being shared: a parameter path, or `eigenvalues`.
        what: String,
        /// burn-collective's error, or what the root peer reported.
        reason: String,
    },
}

/// Result alias for `moq-burn`.
pub type Result<T, E = MoqBurnError> = std::result::Result<T, E>;

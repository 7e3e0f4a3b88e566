//! The crate's error type.

use thiserror::Error;

/// What can go wrong preparing or launching a kernel.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KernelError {
    /// Packed weights this kernel cannot read.
    #[error("packed weights: {reason}")]
    Layout {
        /// What is wrong.
        reason: String,
    },
    /// An error of `moq-core`'s checks, with its messages: a quantization spec that cannot
    /// apply to this tensor (bit width, type, rounding, groups), or a tensor larger than the
    /// kernels' 32-bit indexing (`MoqError::TooLarge`).
    #[error(transparent)]
    Spec(#[from] moq_core::MoqError),
    /// The tensor holds NaN or an infinity; nothing was written.
    #[error("tensor `{tensor}` holds a NaN or infinite value")]
    NonFinite {
        /// The tensor's name.
        tensor: String,
    },
    /// A buffer whose size does not match the shape it is used with.
    #[error("{what}: {found} elements, expected {expected}")]
    Shape {
        /// Which buffer.
        what: String,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// Reading a result back from the device failed.
    #[error("reading from the device: {message}")]
    Read {
        /// The runtime's message.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, KernelError>;

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
    /// A quantization spec that cannot apply to this tensor (bit width, type, rounding, groups);
    /// the same checks and messages as `moq-core`.
    #[error(transparent)]
    Spec(#[from] moq_core::MoqError),
    /// The tensor holds NaN or an infinity; nothing was written.
    #[error("tensor `{tensor}` holds a NaN or infinite value")]
    NonFinite {
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor larger than the kernels index (they use 32-bit element indices).
    #[error("tensor `{tensor}` has {len} elements; the kernels index at most {max}")]
    TooLarge {
        /// The tensor's name.
        tensor: String,
        /// Its number of elements.
        len: usize,
        /// The largest supported number of elements.
        max: usize,
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

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
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, KernelError>;

pub(crate) mod node;
pub(crate) mod shared;
// Exported in the vendored copy, so a caller can match on it (see vendor/README.md).
pub use shared::GlobalCollectiveError;

#[cfg(feature = "orchestrator")]
pub mod orchestrator;
#[cfg(feature = "orchestrator")]
pub use orchestrator::*;

mod base;
pub use base::*;

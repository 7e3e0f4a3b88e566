//! The one error type of `moq-core`.

use thiserror::Error;

/// Everything that can go wrong in `moq-core`. Each variant names the config key, the
/// tensor or the buffer at fault, so a message is enough to find and fix the input.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MoqError {
    /// Packed codes, scales and zero points that do not agree.
    #[error("packed tensor: {reason}")]
    Packed {
        /// What disagrees.
        reason: String,
    },

    /// A tensor larger than the GPU kernels index (they use 32-bit element indices).
    #[error("tensor `{tensor}` has {len} elements; the kernels index at most {max}")]
    TooLarge {
        /// The tensor's name.
        tensor: String,
        /// Its number of elements.
        len: usize,
        /// The largest supported number of elements.
        max: usize,
    },

    /// An export file that cannot be written or read.
    #[error("`{path}`: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// A figure could not be drawn (feature `plot`).
    #[error("plot: {reason}")]
    Plot {
        /// What went wrong.
        reason: String,
    },

    /// The config text is not valid JSON.
    #[error("config is not valid JSON: {message}")]
    Json {
        /// serde_json's description, with line and column.
        message: String,
    },

    /// The config holds a key that MoQ does not know.
    #[error("unknown config key `{key}`{}", suggestion_text(suggestion))]
    UnknownKey {
        /// Full path of the key, for example `quantize_training.quantize_bit`.
        key: String,
        /// The nearest known key, when one is close.
        suggestion: Option<String>,
    },

    /// A config key holds a value of the wrong JSON type.
    #[error("config key `{key}` must be {expected}, found {found}")]
    WrongType {
        /// Full path of the key.
        key: String,
        /// What the key takes, for example "an integer".
        expected: &'static str,
        /// The value found, as JSON.
        found: String,
    },

    /// A config key holds a value of the right type but outside what is allowed.
    #[error("config key `{key}` = {value}: {reason}")]
    InvalidValue {
        /// Full path of the key.
        key: String,
        /// The value found.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// Two spellings of the same setting disagree.
    #[error("config keys `{first}` = {first_value} and `{second}` = {second_value} disagree")]
    Conflict {
        /// Path of the first spelling.
        first: String,
        /// Its value.
        first_value: String,
        /// Path of the second spelling.
        second: String,
        /// Its value.
        second_value: String,
    },

    /// The file holds neither a `quantize_training` section nor the section's own keys.
    #[error("no `quantize_training` section found (top-level keys: {keys})")]
    MissingSection {
        /// The top-level keys that were found.
        keys: String,
    },

    /// A tensor's element count is not divisible by the number of quantization groups.
    #[error("tensor `{tensor}`: {len} elements cannot be split into {groups} equal groups")]
    InvalidGroups {
        /// Tensor (parameter) name.
        tensor: String,
        /// Its number of elements.
        len: usize,
        /// The requested number of groups.
        groups: usize,
    },

    /// A tensor holds NaN or an infinity.
    #[error("tensor `{tensor}`: element {index} is {value}; nothing was written")]
    NonFinite {
        /// Tensor (parameter) name.
        tensor: String,
        /// Flat (row-major) index of the first non-finite element.
        index: usize,
        /// The value found.
        value: f32,
    },

    /// A bit width, quantization type and rounding that do not go together.
    #[error("tensor `{tensor}`: {reason}")]
    UnsupportedMode {
        /// Tensor (parameter) name.
        tensor: String,
        /// What is not supported.
        reason: String,
    },

    /// Two buffers that must agree in length do not.
    #[error("{what}: expected {expected} elements, found {found}")]
    LengthMismatch {
        /// Which buffer.
        what: String,
        /// Required length.
        expected: usize,
        /// Actual length.
        found: usize,
    },

    /// A bit allocation that cannot be made (no layers, a bad sensitivity, a budget nothing
    /// fits).
    #[error("bit allocation: {reason}")]
    Allocation {
        /// What is wrong.
        reason: String,
    },

    /// A schedule was asked about a layer it does not have, or given per-layer data of the
    /// wrong length or range.
    #[error("schedule: {reason}")]
    Schedule {
        /// What is wrong.
        reason: String,
    },
}

impl MoqError {
    /// A [`MoqError::File`] for `path`.
    pub fn file(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Self::File {
            path: escape_controls(&path.display().to_string()),
            reason: reason.into(),
        }
    }
}

/// `text` with every control character (a newline, `\r`, an escape sequence's `ESC`) written
/// as its Rust escape, so a name taken from a file cannot move a terminal's cursor or split an
/// error line.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn suggestion_text(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// Result alias for `moq-core`.
pub type Result<T, E = MoqError> = std::result::Result<T, E>;

//! The study's language-model task: a small GPT-style character model ([`model`]) pretrained
//! in full precision on the Brown corpus' running text ([`corpus`]), then quantized while
//! training continues; quality is held-out bits per character (lower is better).

pub mod corpus;
pub mod model;

pub use corpus::{Batch, Corpus, VOCAB};
pub use model::{CharLm, LmConfig, Probe, bits_per_char};

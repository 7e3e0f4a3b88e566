//! Shared pieces of the MoQ examples, a file each: the study's character language model
//! ([`charlm`]) and the Brown corpus it and the other study tasks read ([`brown`]), the study's
//! grid, tables and statistics ([`study`]), finished runs kept for resuming ([`cells`]),
//! eigenvalues computed once per model state ([`eigen_cache`]), the ways a model is trained
//! ([`variant`]), the backend chosen at run time ([`backend`]), the training loop
//! ([`mod@train`]), figures ([`figures`]), the digits example's data and model ([`digits`]), the
//! results table ([`results`]), epoch lines for burn-train ([`progress`]), the transformer
//! example's task and model ([`permutation`]), and glibc's malloc told to keep freed memory for
//! NdArray ([`malloc`], the one `unsafe` call).
#![deny(unsafe_code)]

pub mod backend;
pub mod brown;
pub mod cells;
pub mod charlm;
pub mod digits;
pub mod eigen_cache;
pub mod figures;
pub mod malloc;
pub mod minilm;
pub mod permutation;
pub mod progress;
pub mod results;
pub mod study;
pub mod train;
pub mod variant;

pub use backend::{Experiment, run_on};
pub use cells::Cells;
pub use eigen_cache::EigenCache;
pub use figures::{Figures, Points};
/// The seeded generator for shuffles (one copy for the project, in `moq-core`).
pub use moq_core::Rng;
pub use progress::EpochLines;
pub use results::{
    ExportNotes, Results, export_path, export_sizes, layer_widths, mean_std, results_path,
    write_file, write_section,
};
pub use train::{
    BoxedProvider, Run, Trained, eigen_provider, eigen_summary, schedule_lines, timed_block, train,
};
pub use variant::{QuantSetup, TableCell, Variant, check_schedules, schedule_note, variant_config};

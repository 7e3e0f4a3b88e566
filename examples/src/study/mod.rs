//! The study: every method at the same export bytes, on tasks where quantization hurts, over
//! paired seeds. [`grid`] names the runs of a table, [`table`] writes the tables and the
//! frontier figure from their outcomes, [`stats`] compares methods over seeds.

pub mod grid;
pub mod stats;
pub mod table;

pub use grid::{Grain, Grid, Outcome, Part, StudyRun, Width};
pub use stats::{Paired, Verdict, paired};
pub use table::{Tables, frontier_svg};

//! The MoQ optimizer wrapper on NdArray, one topic per file: a step ([`step`]), the schedule it
//! follows ([`schedule`]), save and resume ([`record`]), setup errors ([`setup`]), replicas and
//! the `Learner` ([`parallel`], [`metrics`]), the tensor-ops path ([`tensor_ops`]), Hessian
//! eigenvalues ([`eigen`]), second-order bit allocation ([`auto_bits`]), export and
//! inference ([`export`]), int8 activations ([`int8`]) and serving in the model's own type
//! ([`serve`]). One test binary, so the workspace links few.

mod auto_bits;
mod common;
mod eigen;
mod export;
mod int8;
#[cfg(feature = "train")]
mod metrics;
mod parallel;
mod record;
mod schedule;
mod serve;
mod setup;
mod step;
mod tensor_ops;

//! The vector instruction sets moq-core's hot loops are compiled for, found at run time, and
//! every `unsafe` line of the crate: the binary is built for the target's baseline (SSE2 on
//! x86-64) and runs everywhere, and each hot loop also exists compiled inside functions with
//! AVX2 or AVX-512 enabled, called when the CPU has them ([`Isa::best`]). Nothing depends on
//! `target-cpu=native`.
//!
//! - [`vector`]: the vector operations of the CPU matmul's block code, three ways (AVX-512,
//!   AVX2 + FMA, plain arrays), each intrinsic with its SAFETY note;
//! - [`matmul`]: the matmul's block code instantiated per instruction set, and its dispatch;
//! - [`activations`]: the int8-activation matmul's activation quantization per instruction
//!   set, and its dispatch;
//! - [`dot`]: the int8-activation matmul's integer-dot kernel, AVX2 and portable, and its
//!   dispatch;
//! - [`quantize`]: the quantizer's two hot loops (a group's min/max, a grid applied) per
//!   instruction set, and their dispatch.
//!
//! Each `unsafe` call is of a function compiled with target features that [`Isa::available`]
//! found on this CPU before it is called; the intrinsics read and write through slices whose
//! lengths the caller checked.

pub(crate) mod activations;
pub(crate) mod dot;
pub(crate) mod matmul;
pub(crate) mod quantize;
pub(crate) mod vector;

/// An instruction set a hot loop is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// The baseline of the target (SSE2 on x86-64): runs everywhere.
    Portable,
    /// AVX2 and FMA (x86-64).
    Avx2,
    /// AVX-512 F/BW/VL (x86-64).
    Avx512,
}

impl Isa {
    /// The widest instruction set this CPU supports (found once, then one atomic load).
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            [Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.available())
                .unwrap_or(Isa::Portable)
        })
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

//! The vector instruction sets moq-core's hot loops are compiled for, found at run time: the
//! binary is built for the target's baseline (SSE2 on x86-64) and runs everywhere, and each
//! hot loop also exists compiled inside functions with AVX2 or AVX-512 enabled, called when the
//! CPU has them. Nothing depends on `target-cpu=native`.

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

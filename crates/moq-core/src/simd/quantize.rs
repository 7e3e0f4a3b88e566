//! The quantizer's two hot loops (written in `quantizer/apply.rs`), a group's statistics
//! ([`min_max`]) and a group's values or codes ([`apply_grid`] into a [`Sink`]), compiled for
//! the widest vector unit of this CPU ([`Isa::best`]): both are `#[inline(always)]`, so each
//! wrapper below compiles their whole loop with its target features (16 f32 lanes with
//! AVX-512, 8 with AVX2, 4 with SSE2). The grid is applied to a work item's group pieces in
//! one call (`apply_each`), so a group of 128 costs its loop, not a call and a dispatch too.

use super::Isa;
use crate::config::Rounding;
use crate::noise::NoiseKeys;
use crate::quantizer::apply::{Grid, Sink, apply_grid, min_max};
use crate::quantizer::element::Element;

/// [`min_max`] on the best instruction set of this CPU.
#[allow(unsafe_code)]
pub(crate) fn min_max_best<T: Element>(xs: &[T]) -> (f32, f32, bool) {
    // SAFETY: `Isa::best` only names an instruction set this CPU has.
    unsafe { min_max_on(Isa::best(), xs) }
}

/// [`apply_grid`] on each `(grid, sink)` of `work` (the group pieces of one work item), on the
/// best instruction set of this CPU: one call for the whole item, so a short group costs its
/// loop and not a call, a dispatch and the loop's set-up each.
#[allow(unsafe_code)]
pub(crate) fn apply_each_best<S: Sink>(
    rounding: Rounding,
    keys: NoiseKeys,
    work: impl Iterator<Item = (Grid, S)>,
) {
    // SAFETY: `Isa::best` only names an instruction set this CPU has.
    unsafe { apply_each_on(Isa::best(), rounding, keys, work) }
}

/// [`apply_grid`] on each `(grid, sink)`, inlined into each instruction set's wrapper.
#[inline(always)]
fn apply_each<S: Sink>(rounding: Rounding, keys: NoiseKeys, work: impl Iterator<Item = (Grid, S)>) {
    for (grid, sink) in work {
        apply_grid(grid, rounding, keys, sink);
    }
}

/// [`min_max`] compiled for `isa`. Called once per group piece, so it does not look the CPU's
/// features up again.
///
/// # Safety
/// This CPU must have `isa` ([`Isa::available`]).
#[allow(unsafe_code)]
unsafe fn min_max_on<T: Element>(isa: Isa, xs: &[T]) -> (f32, f32, bool) {
    match isa {
        // SAFETY (both arms): the caller guarantees this CPU has `isa`'s instructions.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::min_max_avx512(xs) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::min_max_avx2(xs) },
        _ => min_max(xs),
    }
}

/// [`apply_grid`] on each `(grid, sink)` compiled for `isa`.
///
/// # Safety
/// This CPU must have `isa` ([`Isa::available`]).
#[allow(unsafe_code)]
unsafe fn apply_each_on<S: Sink>(
    isa: Isa,
    rounding: Rounding,
    keys: NoiseKeys,
    work: impl Iterator<Item = (Grid, S)>,
) {
    match isa {
        // SAFETY (both arms): the caller guarantees this CPU has `isa`'s instructions.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::apply_each_avx512(rounding, keys, work) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::apply_each_avx2(rounding, keys, work) },
        _ => apply_each(rounding, keys, work),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) fn min_max_avx512<T: Element>(xs: &[T]) -> (f32, f32, bool) {
        min_max(xs)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn min_max_avx2<T: Element>(xs: &[T]) -> (f32, f32, bool) {
        min_max(xs)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    pub(super) fn apply_each_avx512<S: Sink>(
        rounding: Rounding,
        keys: NoiseKeys,
        work: impl Iterator<Item = (Grid, S)>,
    ) {
        apply_each(rounding, keys, work)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn apply_each_avx2<S: Sink>(
        rounding: Rounding,
        keys: NoiseKeys,
        work: impl Iterator<Item = (Grid, S)>,
    ) {
        apply_each(rounding, keys, work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::config::QuantType;
    use crate::noise::NoiseKey;
    use crate::quantizer::apply::{Codes, Values};
    use crate::quantizer::grid::linear_grid;

    /// Every instruction set this CPU has gives the portable code's results bit for bit (the
    /// loops use only exact IEEE operations: no FMA contraction, rounding by adding 2^23).
    #[test]
    #[allow(unsafe_code)]
    fn every_instruction_set_computes_the_same_bits() {
        let mut rng = Rng::new(7);
        let mut x = rng.normal_vec(4099, 3.0);
        x[17] = 0.0;
        x[18] = -0.0;
        // SAFETY (every call below): `Isa::Portable` runs anywhere, and the others only run
        // where `Isa::available` says this CPU has them.
        let reference = unsafe { min_max_on(Isa::Portable, &x) };
        let keys = NoiseKey {
            seed: 5,
            step: 1,
            stream: 2,
        }
        .keys();
        for isa in [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.available())
        {
            assert_eq!(unsafe { min_max_on(isa, &x) }, reference, "{isa:?}");
            for (bits, qt) in [(8, QuantType::Symmetric), (3, QuantType::Asymmetric)] {
                let grid = linear_grid(reference.0, reference.1, bits, qt);
                for rounding in [Rounding::Nearest, Rounding::Stochastic] {
                    let run = |isa: Isa| {
                        let mut values = vec![0.0f32; x.len()];
                        let sink = Values {
                            start: 0,
                            src: &x,
                            dst: &mut values,
                            mix: 0.0,
                        };
                        unsafe {
                            apply_each_on(isa, rounding, keys, std::iter::once((grid, sink)))
                        };
                        let mut codes = vec![0i32; x.len()];
                        let sink = Codes {
                            start: 0,
                            src: &x,
                            dst: &mut codes,
                        };
                        unsafe {
                            apply_each_on(isa, rounding, keys, std::iter::once((grid, sink)))
                        };
                        (
                            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            codes,
                        )
                    };
                    assert_eq!(run(isa), run(Isa::Portable), "{isa:?} {bits} {rounding:?}");
                }
            }
        }
    }
}

//! Bit allocation on any input: layers (sizes, sensitivities, per-width errors and export
//! sizes) and a budget read from the bytes. `allocate` returns a choice within the budget,
//! one of each layer's widths, or an error: never a panic, a hang or an overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moq_core::allocate::{Budget, LayerCurve, Overhead, WidthOption, allocate};

/// Reads little-endian numbers off the front of the input.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u64(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }

    fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let layers = (b.u64() % 12) as usize;
    let widths = 1 + (b.u64() % 4) as usize;
    let curves: Vec<LayerCurve> = (0..layers)
        .map(|l| LayerCurve {
            name: format!("l{l}"),
            params: (b.u64() % 5000) as usize,
            sensitivity: b.f64(),
            options: (0..widths)
                .map(|k| WidthOption {
                    bits: 1 + k as u32 * 2,
                    error: b.f64(),
                    overhead_bits: b.u64() % 100_000,
                    export_bytes: match b.u64() % 8 {
                        0 => None,
                        n => Some(n * (b.u64() % 10_000)),
                    },
                })
                .collect(),
        })
        .collect();
    let budget = match b.u64() % 4 {
        0 => Budget::AverageBits(b.f64(), Overhead::Excluded),
        1 => Budget::AverageBits(b.f64(), Overhead::Included),
        2 => Budget::Bytes(b.u64() % 1_000_000),
        _ => Budget::UniformBytes((b.u64() % 10) as u32),
    };
    if let Ok(a) = allocate(&curves, &budget) {
        assert!(a.cost <= a.capacity, "{} > {}", a.cost, a.capacity);
        assert_eq!(a.bits.len(), curves.len());
        for (curve, bits) in curves.iter().zip(&a.bits) {
            assert!(curve.options.iter().any(|o| o.bits == *bits), "`{}`: {bits}", curve.name);
        }
    }
});

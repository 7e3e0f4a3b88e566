//! Timing as a served model runs: between two calls of one layer the other layers' weights pass
//! through the caches, so each call finds its weight in DRAM. A contender is timed *from DRAM*
//! on a stack of [`copies`] distinct layers whose weights total at least [`STACK_BYTES`] (4× the
//! L3 or 128 MiB, whichever is more), called in turn as a decoder step calls its layers
//! ([`timed_in_turn`]); the Python peers build the same stack. [`stream_read`] measures what the
//! memory system gives: a buffer of the same size read from DRAM by every thread, the bandwidth
//! a kernel's reads are compared with.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::stats::median;

/// What a stack of layers must hold at least, so each layer's turn finds it evicted: 4× the
/// L3 (read from sysfs), and never under 128 MiB.
pub fn stack_bytes() -> usize {
    (4 * l3_bytes().unwrap_or(32 << 20)).max(128 << 20)
}

/// Distinct copies of a layer of `bytes` in a stack of [`stack_bytes`] (at least 2).
pub fn copies(bytes: usize) -> usize {
    stack_bytes().div_ceil(bytes.max(1)).max(2)
}

/// Median over `rounds` calls of `f` on the stack's layers in turn (layer `i % len` at call
/// `i`), after one untimed pass over the whole stack, so every timed call finds its layer last
/// used a whole stack ago.
pub fn timed_in_turn<L, T>(rounds: usize, stack: &[L], mut f: impl FnMut(&L) -> T) -> Duration {
    for layer in stack {
        black_box(f(layer));
    }
    median(
        (0..rounds)
            .map(|i| {
                let layer = &stack[i % stack.len()];
                let t = Instant::now();
                black_box(f(layer));
                t.elapsed()
            })
            .collect(),
    )
}

/// The read bandwidth from DRAM, in bytes per second: a buffer of [`stack_bytes`] read by all
/// of rayon's threads (each a contiguous part, summed in vector registers), the best of
/// `rounds` reads.
pub fn stream_read(rounds: usize) -> f64 {
    let data: Vec<u64> = (0..stack_bytes() / 8).map(|i| i as u64).collect();
    let part = data.len().div_ceil(rayon::current_num_threads()).max(1);
    let best = (0..rounds.max(1))
        .map(|_| {
            let t = Instant::now();
            black_box(
                data.par_chunks(part)
                    .map(sum)
                    .reduce(|| 0, u64::wrapping_add),
            );
            t.elapsed()
        })
        .min()
        .unwrap_or(Duration::MAX);
    (data.len() * 8) as f64 / best.as_secs_f64()
}

/// The wrapping sum of `v` (an integer reduction, which the compiler vectorises).
fn sum(v: &[u64]) -> u64 {
    v.iter().fold(0u64, |a, &x| a.wrapping_add(x))
}

/// The L3's size from Linux's sysfs, when it says.
fn l3_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size").ok()?;
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let value: usize = digits.parse().ok()?;
    match unit {
        "K" => Some(value << 10),
        "M" => Some(value << 20),
        _ => None,
    }
}

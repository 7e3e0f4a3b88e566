//! The serving table of `cpu_matmul`: every contender timed **warm** (one layer called again and
//! again, its weight in cache) and **from DRAM** (a stack of distinct copies of the layer, at
//! least 4× the L3, called in turn as a decoder step calls its layers; `memory`), beside the
//! read bandwidth of the same machine in the same run. Contenders at M rows of `x`:
//! numpy's f32 `x @ W` (the baseline of every ratio), our W4 and W8 as a user calls them
//! (`QuantizedLinear` on NdArray, f32 activations), the same layers with int8 activations
//! (`PackedWeight::with_activations`, as `load_codes_with` serves them; up to
//! `INT8_MAX_ROWS` rows, above which the layer takes the f32 path and the row is left out), and
//! onnxruntime's `MatMulNBits` at accuracy level 1 (f32 activations) and 4 (int8 activations).

use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use moq_burn::{Activations, QuantizedLinear};
use moq_core::export::Exported;
use moq_core::matmul::INT8_MAX_ROWS;
use moq_core::{CodeLayout, PackedTensor, QuantSpec, QuantType, Rng, ScaleFormat, pack, quantize};

use crate::memory::{copies, stream_read, timed_in_turn};
use crate::peers::{PeerTime, onnxruntime};

type B = NdArray;

/// One contender's times and error at one `(k, n, m)`.
struct Timing {
    name: String,
    time: PeerTime,
    /// Bytes one call reads (codes and scales), when known.
    bytes: Option<usize>,
}

/// Runs the serving table over `shapes` (`(k, n, m)`, k a multiple of `group`) with numpy's
/// times for them (`None`: no numpy column); returns the largest relative error of our
/// int8-activation path against `x · dequant(W)`.
pub fn run(
    shapes: &[(usize, usize, usize)],
    group: usize,
    rounds: usize,
    numpy: Option<(String, Vec<PeerTime>)>,
) -> f64 {
    let threads = rayon::current_num_threads();
    let stream = stream_read(5);
    println!(
        "\n### From DRAM\n\nDRAM read bandwidth (a {} MiB buffer read by {threads} threads, best \
         of 5): {:.1} GB/s. Each time: median of {rounds} calls; from DRAM: a stack of copies of \
         the layer of at least {} MiB in all, called in turn.\n",
        crate::memory::stack_bytes() >> 20,
        stream / 1e9,
        crate::memory::stack_bytes() >> 20,
    );
    let numpy = numpy.map(|(_, times)| times);
    let ort: Vec<(String, Option<Vec<PeerTime>>)> = [(4, 1), (4, 4), (8, 1), (8, 4)]
        .into_iter()
        .map(|(bits, level)| {
            let name = format!("onnxruntime W{bits} level {level}");
            let times = onnxruntime(shapes, bits, group, level, rounds, threads);
            (name.clone(), report_peer(&name, times))
        })
        .collect();
    println!(
        "\n| K×N | M | contender | warm | from DRAM | numpy f32 / it, warm | from DRAM | GB/s from \
         DRAM | of the DRAM bandwidth | rel. error |"
    );
    println!("|{}", " --- |".repeat(10));
    let mut worst = 0.0f64;
    for (row, &(k, n, m)) in shapes.iter().enumerate() {
        let mut timings = Vec::new();
        if let Some(np) = &numpy {
            timings.push(Timing {
                name: "numpy f32".into(),
                time: np[row],
                bytes: Some(4 * k * n),
            });
        }
        let (ours, error) = ours(k, n, m, group, rounds);
        worst = worst.max(error);
        timings.extend(ours);
        for (name, times) in &ort {
            if let Some(times) = times {
                timings.push(Timing {
                    name: name.clone(),
                    time: times[row],
                    bytes: None,
                });
            }
        }
        print_rows(k, n, m, &timings, numpy.as_ref().map(|t| t[row]), stream);
    }
    worst
}

/// A peer's times, or `None` after printing why it is skipped; prints what ran.
fn report_peer(
    name: &str,
    result: Result<(String, Vec<PeerTime>), String>,
) -> Option<Vec<PeerTime>> {
    match result {
        Ok((what, times)) => {
            println!("- {name}: {what}");
            Some(times)
        }
        Err(why) => {
            println!("- {name} skipped: {why}");
            None
        }
    }
}

/// Our four contenders at `(k, n, m)`, and the int8 path's largest relative error (‖Δy‖ / ‖y‖
/// against the f32 path, which is `x · dequant(W)` to f32 rounding).
fn ours(k: usize, n: usize, m: usize, group: usize, rounds: usize) -> (Vec<Timing>, f64) {
    let mut rng = Rng::new((k * n + m) as u64);
    let w = rng.normal_vec(k * n, 0.02);
    let xv = rng.normal_vec(m * k, 1.0);
    let device = Default::default();
    let x = Tensor::<B, 2>::from_data(TensorData::new(xv, [m, k]), &device);
    let mut out = Vec::new();
    let mut worst = 0.0f64;
    for bits in [4u32, 8] {
        let spec = QuantSpec::new(bits, QuantType::Symmetric, k * n / group);
        let q = quantize("w", &w, &spec).expect("finite weights");
        let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).expect("1-8 bits");
        let bytes = packed.size_bytes();
        let stack: Vec<QuantizedLinear<B>> =
            (0..copies(bytes)).map(|_| layer(&packed, k, n)).collect();
        let forward = |l: &QuantizedLinear<B>| l.forward(x.clone());
        let exact = crate::stats::values(forward(&stack[0]));
        out.push(Timing {
            name: format!("moq W{bits} (QuantizedLinear, f32 activations)"),
            time: both(rounds, &stack, forward),
            bytes: Some(bytes),
        });
        if m > INT8_MAX_ROWS {
            continue;
        }
        let stack: Vec<QuantizedLinear<B>> = stack
            .into_iter()
            .map(|mut l| {
                l.weight = l.weight.with_activations(Activations::Int8).expect("tiles");
                l
            })
            .collect();
        let tiled_bytes = stack[0].weight.int8().map_or(0, |t| t.tiles().bytes());
        let error = relative_l2(&crate::stats::values(forward(&stack[0])), &exact);
        worst = worst.max(error);
        out.push(Timing {
            name: format!("moq W{bits} (QuantizedLinear, int8 activations)"),
            time: PeerTime {
                error: Some(error),
                ..both(rounds, &stack, forward)
            },
            bytes: Some(tiled_bytes),
        });
    }
    (out, worst)
}

/// A `QuantizedLinear` of its own buffers holding `packed`.
fn layer(packed: &PackedTensor, k: usize, n: usize) -> QuantizedLinear<B> {
    let e = Exported {
        name: "w".into(),
        shape: vec![k, n],
        packed: packed.clone(),
    };
    QuantizedLinear::<B>::from_export(&e, None, &Default::default()).expect("a valid export")
}

/// Warm (the stack's first layer again and again) and from DRAM (the stack in turn).
fn both<L, T>(rounds: usize, stack: &[L], mut f: impl FnMut(&L) -> T) -> PeerTime {
    PeerTime {
        warm: timed_in_turn(rounds, &stack[..1], &mut f),
        dram: timed_in_turn(rounds, stack, &mut f),
        error: None,
    }
}

/// ‖a − b‖ / ‖b‖.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|b| (*b as f64).powi(2)).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// The table's rows of one `(k, n, m)`.
fn print_rows(k: usize, n: usize, m: usize, rows: &[Timing], np: Option<PeerTime>, stream: f64) {
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
    let ratio = |a: Duration, b: Duration| format!("{:.2}", a.as_secs_f64() / b.as_secs_f64());
    for t in rows {
        let gbs = t.bytes.map(|b| b as f64 / t.time.dram.as_secs_f64());
        println!(
            "| {k}×{n} | {m} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.name,
            ms(t.time.warm),
            ms(t.time.dram),
            np.map_or("–".into(), |np| ratio(np.warm, t.time.warm)),
            np.map_or("–".into(), |np| ratio(np.dram, t.time.dram)),
            gbs.map_or("–".into(), |g| format!("{:.1}", g / 1e9)),
            gbs.map_or("–".into(), |g| format!("{:.0}%", 100.0 * g / stream)),
            t.time.error.map_or("–".into(), |e| format!("{e:.1e}")),
        );
    }
}

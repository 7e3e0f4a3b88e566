//! The ratio benchmark of low-bit inference on the CPU: `QuantizedLinear` at W8 and W4 on
//! NdArray (`moq-core`'s CPU kernel, through burn, as a user calls it) against, in the same run
//! on the same shapes, burn NdArray's f32 `Linear` holding the dequantized weights, candle's
//! quantized matmul (`QMatMul` with `Q8_0` / `Q4_0` blocks of 32, the peer a Rust user would
//! pick), numpy's f32 `x @ W` when `python3` with numpy is installed, and a `copy_from_slice`
//! of the W4 codes' bytes (what the memory system gives). Shapes: M ∈ {1, 4, 16, 64} ×
//! (K, N) ∈ {(4096, 4096), (4096, 14336), (384, 1536), (1536, 384)}, groups of 128.
//!
//! It prints a markdown table of median times, the ratios, and the weight bandwidth achieved,
//! and exits 1 if our output differs from the f32 reference (`x · dequant(W)`) beyond f32
//! rounding.
//!
//! ```text
//! cargo bench -p moq-benches --bench cpu_matmul               # the full grid
//! cargo bench -p moq-benches --bench cpu_matmul -- --quick    # two small shapes, M ≤ 4
//! cargo bench -p moq-benches --bench cpu_matmul -- --shape 4096x4096   # one shape, no MiniLM
//! cargo bench -p moq-benches --bench cpu_matmul -- --minilm   # MiniLM only
//! ```
//! After the grid, the serving table (module `serving`) times the same shapes warm and **from
//! DRAM** (a stack of distinct copies of each layer, at least 4× the L3, called in turn), beside
//! the machine's DRAM read bandwidth: numpy f32, our W4 / W8 with f32 activations and with int8
//! activations (`PackedWeight::with_activations`, up to `INT8_MAX_ROWS` rows), and
//! onnxruntime's `MatMulNBits` at accuracy levels 1 and 4 (`benches/ort_matmul_nbits.py`;
//! skipped with the reason when `pip install onnxruntime onnx` has not been run); it exits 1 if the int8 path's relative error passes 2%. Then the same
//! run times all-MiniLM-L6-v2's sentence embeddings in f32, W8 and W4, the quantized ones with
//! f32 and with int8 activations (module `sentences`;
//! skipped with a line when `scripts/fetch-minilm` has not been run).
//! candle is built as a dependency is by default: its quantized dot products choose their SIMD
//! code at compile time (`cfg(target_feature = "avx2")`), so without `-C target-cpu` flags it
//! runs its portable code; ours picks AVX-512 / AVX2 at run time. The fair candle column comes
//! from a build for this CPU in a target directory of its own:
//! `CARGO_TARGET_DIR=/tmp/native-target RUSTFLAGS="-C target-cpu=native" cargo bench -p
//! moq-benches --bench cpu_matmul -- --shape 4096x4096` (docs/benchmarks.md has its figures).

mod memory;
mod peers;
mod sentences;
mod serving;
mod stats;

use std::hint::black_box;
use std::time::{Duration, Instant};

use burn::backend::NdArray;
use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device as CandleDevice, Module, Tensor as CandleTensor};
use moq_burn::QuantizedLinear;
use moq_core::export::Exported;
use moq_core::{CodeLayout, QuantSpec, QuantType, Rng, ScaleFormat, pack, quantize};

use stats::{median, relative_error, values};

type B = NdArray;

const GROUP: usize = 128;

/// Median over `rounds` calls of `f` (after one warm-up call).
fn timed<T>(rounds: usize, mut f: impl FnMut() -> T) -> Duration {
    black_box(f());
    median(
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// A width's layer, its f32 twin holding the dequantized weight, and the stored code bytes.
struct Quantized {
    layer: QuantizedLinear<B>,
    f32_twin: Linear<B>,
    bytes: usize,
}

fn quantized(w: &[f32], k: usize, n: usize, bits: u32) -> Quantized {
    let device = Default::default();
    let q = quantize(
        "w",
        w,
        &QuantSpec::new(bits, QuantType::Symmetric, k * n / GROUP),
    )
    .expect("finite weights");
    let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).expect("1-8 bits");
    let bytes = packed.size_bytes();
    let e = Exported {
        name: "w".into(),
        shape: vec![k, n],
        packed,
    };
    let layer = QuantizedLinear::<B>::from_export(&e, None, &device).expect("a valid export");
    let mut f32_twin: Linear<B> = LinearConfig::new(k, n).with_bias(false).init(&device);
    f32_twin.weight = Param::from_tensor(layer.dequantized());
    Quantized {
        layer,
        f32_twin,
        bytes,
    }
}

fn candle(w: &[f32], k: usize, n: usize, dtype: GgmlDType) -> QMatMul {
    // candle's weight is [n, k], quantized in blocks of 32 along k.
    let mut t = vec![0.0f32; k * n];
    for i in 0..k {
        for j in 0..n {
            t[j * k + i] = w[i * n + j];
        }
    }
    let t = CandleTensor::from_vec(t, (n, k), &CandleDevice::Cpu).expect("a tensor");
    QMatMul::from_qtensor(QTensor::quantize(&t, dtype).expect("quantizes")).expect("a matmul")
}

/// The MiniLM part of the run (`sentences`): exits 1 on an error.
fn minilm(quick: bool, rounds: usize) {
    let cases: &[(usize, usize)] = if quick {
        &[(1, 16), (4, 32)]
    } else {
        &[(1, 16), (16, 16), (1, 128), (16, 128)]
    };
    if let Err(e) = sentences::run(cases, GROUP, rounds.min(7)) {
        eprintln!("cpu_matmul: MiniLM: {e:#}");
        std::process::exit(1);
    }
}

/// The grid the command line asks for: the weight shapes (K, N), the batch sizes M, and the
/// calls each time is the median of.
struct Grid {
    sizes: Vec<(usize, usize)>,
    ms: &'static [usize],
    rounds: usize,
}

impl Grid {
    /// The full grid, or `--quick`'s; `--shape KxN` measures one shape of it (a malformed one
    /// exits 2).
    fn from_args(args: &[String], quick: bool) -> Self {
        let (mut sizes, ms, rounds): (Vec<(usize, usize)>, &[usize], usize) = if quick {
            (vec![(384, 1536), (1536, 384)], &[1, 4], 3)
        } else {
            (
                vec![(4096, 4096), (4096, 14336), (384, 1536), (1536, 384)],
                &[1, 4, 16, 64],
                15,
            )
        };
        if let Some(shape) = args
            .iter()
            .position(|a| a == "--shape")
            .and_then(|i| args.get(i + 1))
        {
            let parsed = shape
                .split_once('x')
                .and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)));
            let Some(shape) = parsed else {
                eprintln!("cpu_matmul: --shape takes KxN, e.g. 4096x4096; got `{shape}`");
                std::process::exit(2);
            };
            sizes = vec![shape];
        }
        Self { sizes, ms, rounds }
    }

    /// Every `(k, n, m)`, in the table's row order.
    fn shapes(&self) -> Vec<(usize, usize, usize)> {
        self.sizes
            .iter()
            .flat_map(|&(k, n)| self.ms.iter().map(move |&m| (k, n, m)))
            .collect()
    }
}

/// One weight shape's contenders: our W8 and W4 layers with their f32 twins, candle's Q8_0
/// and Q4_0 matmuls, and what a copy of the W4 bytes achieves.
struct Contenders {
    k: usize,
    n: usize,
    w8: Quantized,
    w4: Quantized,
    q8: QMatMul,
    q4: QMatMul,
    /// GB/s of `copy_from_slice` over the W4 codes' bytes.
    copy_gbs: f64,
}

impl Contenders {
    /// The contenders holding the `k × n` weight `w`; the copy is timed over `rounds` calls.
    fn new(w: &[f32], k: usize, n: usize, rounds: usize) -> Self {
        let w8 = quantized(w, k, n, 8);
        let w4 = quantized(w, k, n, 4);
        let q8 = candle(w, k, n, GgmlDType::Q8_0);
        let q4 = candle(w, k, n, GgmlDType::Q4_0);
        // What the memory system gives for the W4 codes' bytes.
        let src = vec![1u8; w4.bytes];
        let mut dst = vec![0u8; w4.bytes];
        let copy = timed(rounds, || dst.copy_from_slice(black_box(&src)));
        let copy_gbs = w4.bytes as f64 / copy.as_secs_f64() / 1e9;
        Self {
            k,
            n,
            w8,
            w4,
            q8,
            q4,
            copy_gbs,
        }
    }
}

/// The table as it is printed: numpy's times by row, the next row, and the largest error
/// from the f32 reference so far.
struct Table {
    rounds: usize,
    numpy: Option<Vec<f64>>,
    row: usize,
    worst: f32,
}

impl Table {
    /// The rows of the weight shape `k × n`, one per M.
    fn shape(&mut self, k: usize, n: usize, ms: &[usize]) {
        let mut rng = Rng::new((k * n) as u64);
        let w: Vec<f32> = rng.normal_vec(k * n, 0.02);
        let contenders = Contenders::new(&w, k, n, self.rounds);
        for &m in ms {
            let xv = rng.uniform_vec(m * k);
            self.row(&contenders, m, xv);
        }
    }

    /// The row of batch size `m`, the activations `xv`: every contender timed, ours checked.
    fn row(&mut self, c: &Contenders, m: usize, xv: Vec<f32>) {
        let (k, n, rounds, copy_gbs) = (c.k, c.n, self.rounds, c.copy_gbs);
        let device = Default::default();
        let x = Tensor::<B, 2>::from_data(TensorData::new(xv.clone(), [m, k]), &device);
        let cx = CandleTensor::from_vec(xv, (m, k), &CandleDevice::Cpu).expect("a tensor");
        let f32_time = timed(rounds, || c.w4.f32_twin.forward(x.clone()));
        let t8 = timed(rounds, || c.w8.layer.forward(x.clone()));
        let t4 = timed(rounds, || c.w4.layer.forward(x.clone()));
        let c8 = timed(rounds, || c.q8.forward(&cx).expect("candle"));
        let c4 = timed(rounds, || c.q4.forward(&cx).expect("candle"));
        let err8 = relative_error(
            &values(c.w8.layer.forward(x.clone())),
            &values(c.w8.f32_twin.forward(x.clone())),
        );
        let err4 = relative_error(
            &values(c.w4.layer.forward(x.clone())),
            &values(c.w4.f32_twin.forward(x.clone())),
        );
        self.worst = self.worst.max(err8).max(err4);
        let np = self
            .numpy
            .as_ref()
            .map(|t| Duration::from_secs_f64(t[self.row]));
        self.row += 1;
        let ratio = |a: Duration, b: Duration| format!("{:.2}", a.as_secs_f64() / b.as_secs_f64());
        let gbs =
            |bytes: usize, t: Duration| format!("{:.1}", bytes as f64 / t.as_secs_f64() / 1e9);
        println!(
            "| {k}×{n} | {m} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {copy_gbs:.1} | {err8:.1e} | {err4:.1e} |",
            ms(f32_time),
            ms(t8),
            ms(t4),
            ms(c8),
            ms(c4),
            np.map_or("–".into(), ms),
            ratio(f32_time, t8),
            ratio(f32_time, t4),
            ratio(c8, t8),
            ratio(c4, t4),
            np.map_or("–".into(), |np| ratio(np, t8)),
            np.map_or("–".into(), |np| ratio(np, t4)),
            gbs(c.w8.bytes, t8),
            gbs(c.w4.bytes, t4),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    if args.iter().any(|a| a == "--minilm") {
        minilm(quick, if quick { 3 } else { 15 });
        return;
    }
    let grid = Grid::from_args(&args, quick);
    let rounds = grid.rounds;
    let threads = rayon::current_num_threads();
    println!(
        "low-bit matmul on the CPU: {:?} ({threads} threads), groups of {GROUP}, f32 activations; \
         median of {rounds} calls",
        moq_core::Isa::best()
    );
    let shapes = grid.shapes();
    let numpy = peers::numpy(&shapes, rounds, threads);
    match &numpy {
        Ok((what, _)) => println!("numpy: {what}"),
        Err(why) => println!("(no numpy column: {why}; `pip install numpy` adds it)"),
    }
    println!();
    println!(
        "| K×N | M | f32 Linear | W8 | W4 | candle Q8_0 | candle Q4_0 | numpy f32 | f32/W8 | f32/W4 \
         | Q8_0/W8 | Q4_0/W4 | numpy/W8 | numpy/W4 | GB/s W8 | GB/s W4 | GB/s copy | err W8 | err W4 |"
    );
    println!("|{}", " --- |".repeat(19));
    let mut table = Table {
        rounds,
        numpy: numpy
            .as_ref()
            .ok()
            .map(|(_, t)| t.iter().map(|t| t.warm.as_secs_f64()).collect()),
        row: 0,
        worst: 0.0,
    };
    for &(k, n) in &grid.sizes {
        table.shape(k, n, grid.ms);
    }
    println!(
        "\nratios > 1: ours is faster. GB/s: bytes of codes and scales read per second \
         (copy: the W4 bytes copied per second)."
    );
    let int8_error = serving::run(&shapes, GROUP, rounds, numpy.ok());
    // `--shape` measures one matmul shape only.
    if !args.iter().any(|a| a == "--shape") {
        minilm(quick, rounds);
    }
    let worst = table.worst;
    if worst > 1e-4 {
        eprintln!("cpu_matmul: outputs differ from the f32 reference by {worst:.1e} (> 1e-4)");
        std::process::exit(1);
    }
    if int8_error > 0.02 {
        eprintln!(
            "cpu_matmul: the int8-activation path is {int8_error:.1e} from the f32 one (> 2e-2)"
        );
        std::process::exit(1);
    }
}

//! The same seeded MoQ training on burn's CPU backends: NdArray against Flex (burn's pure-Rust
//! CPU backend, the `gemm` crate's matmul) and, in builds with `tch`, against LibTorch
//! (burn-tch), from the same initial weights over the same batches, with the wrapper's bits
//! dropping from 8 to 4 during the run. The losses, the bits after every step, the masters and
//! the quantized weights agree to float tolerance (the backends differ only in summation
//! order).
//!
//! scripts/test runs it in three builds: `flex` (the cpu group: NdArray's own matmul against
//! Flex's), `flex,openblas` (the openblas group: NdArray multiplying through the system
//! OpenBLAS, against Flex; LibTorch is not linked, since `libtorch_cpu.so` exports `sgemm_` and
//! could take NdArray's BLAS calls) and `flex,tch` (the tch group). So NdArray, NdArray +
//! OpenBLAS and LibTorch are each compared with the same two references.
//!
//! `cargo test -p moq-examples --features flex --test backends`
//! `cargo test -p moq-examples --features flex,openblas --test backends`
//! `scripts/with-tch cargo test -p moq-examples --features flex,tch --test backends`

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use moq_burn::moq_hessian::path::{NamedVisitor, visit_named};
use moq_burn::{Moq, MoqBackend};
use moq_core::QuantizeConfig;
use moq_examples::digits::{Digits, Mlp};

mod common;

const STEPS: u64 = 16;
const BATCH: usize = 32;
const LR: f64 = 3e-3;

/// What one run left: the loss of every step, the bits after every step, and the final
/// masters and (fake-quantized) weights by parameter path.
struct Run {
    losses: Vec<f64>,
    bits: Vec<Vec<Option<u32>>>,
    masters: Vec<(String, Vec<f32>)>,
    weights: Vec<(String, Vec<f32>)>,
}

/// 8 → 4 bits with period 1 (drops at steps 1, 3, 7 and 15), one group per tensor.
fn config() -> QuantizeConfig {
    QuantizeConfig::builder()
        .schedule_offset(0)
        .bits(8, 4)
        .period(1)
        .build()
        .unwrap()
}

/// Trains the model `record` holds on backend `B` for [`STEPS`] steps of Adam wrapped by MoQ.
fn train<B>(record: &[u8], digits: &Digits) -> Run
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    let device = B::Device::default();
    let record = BinBytesRecorder::<FullPrecisionSettings, Vec<u8>>::default()
        .load(record.to_vec(), &device)
        .unwrap();
    let mut model = Mlp::<B>::new(&device).load_record(record);
    let mut optim = Moq::new(config())
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (mut losses, mut bits) = (Vec::new(), Vec::new());
    for step in 0..STEPS as usize {
        let rows: Vec<usize> = (step * BATCH..(step + 1) * BATCH).collect();
        let (x, y) = digits.tensors::<B>(&rows, &device);
        let loss = loss_fn.forward(model.forward(x), y);
        losses.push(loss.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(LR, model, grads);
        bits.push(optim.layer_bits());
    }
    if let Some(err) = optim.take_error() {
        panic!("MoQ reported an error on {}: {err}", B::name(&device));
    }
    let masters = optim
        .quantized_params()
        .into_iter()
        .zip(optim.to_record().masters)
        .filter_map(|(path, master)| Some((path.to_string(), floats(master?))))
        .collect();
    Run {
        losses,
        bits,
        masters,
        weights: values(&model.valid()),
    }
}

fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// Every float parameter's values by path, in module order.
fn values<B: Backend>(model: &Mlp<B>) -> Vec<(String, Vec<f32>)> {
    struct Collect(Vec<(String, Vec<f32>)>);
    impl<B: Backend> NamedVisitor<B> for Collect {
        fn visit_named<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            self.0.push((path.to_string(), floats(param.val())));
        }
    }
    let mut collect = Collect(Vec::new());
    visit_named(model, &mut collect);
    collect.0
}

fn assert_agree(reference: &Run, other: &Run) {
    assert_eq!(reference.bits, other.bits, "bits after each step");
    assert_eq!(
        reference.bits.last().unwrap(),
        &vec![Some(4); 3],
        "the run reaches 4 bits"
    );
    for (step, (a, b)) in reference.losses.iter().zip(&other.losses).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "loss of step {step}: {a} against {b}"
        );
    }
    for ((path, a), (_, b)) in reference.masters.iter().zip(&other.masters) {
        common::assert_close(&format!("master {path}"), a, b, 1e-5);
    }
    for ((path, a), (_, b)) in reference.weights.iter().zip(&other.weights) {
        // Biases are not quantized (MoQ's default layer patterns take weights).
        if path.ends_with("bias") {
            common::assert_close(path, a, b, 1e-5);
        } else {
            common::assert_quantized_close(path, a, b, 4);
        }
    }
}

/// The initial weights, drawn once on NdArray, as the bytes every backend loads.
fn initial_record() -> Vec<u8> {
    let initial = Mlp::<NdArray>::new(&Default::default()).into_record();
    BinBytesRecorder::<FullPrecisionSettings, Vec<u8>>::default()
        .record(initial, ())
        .unwrap()
}

#[test]
fn ndarray_and_flex_train_the_same_moq_model() {
    let digits = Digits::load(&Digits::default_path()).unwrap();
    let record = initial_record();
    let ndarray = train::<Autodiff<NdArray>>(&record, &digits);
    // Training moved the model: the losses are not all the first one.
    assert!(
        ndarray
            .losses
            .iter()
            .any(|l| (l - ndarray.losses[0]).abs() > 1e-3)
    );
    assert_agree(&ndarray, &train::<Autodiff<Flex>>(&record, &digits));
}

#[cfg(feature = "tch")]
#[test]
fn ndarray_and_libtorch_train_the_same_moq_model() {
    let digits = Digits::load(&Digits::default_path()).unwrap();
    let record = initial_record();
    let ndarray = train::<Autodiff<NdArray>>(&record, &digits);
    let libtorch = train::<Autodiff<burn::backend::LibTorch>>(&record, &digits);
    assert_agree(&ndarray, &libtorch);
}

/// In the `openblas` build NdArray's matmul goes through the system OpenBLAS: the library is
/// loaded in this process (a build that silently fell back to NdArray's own matmul would pass
/// the agreement test without testing OpenBLAS).
#[cfg(all(feature = "openblas", target_os = "linux"))]
#[test]
fn the_openblas_build_loads_the_system_openblas() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        maps.contains("libopenblas"),
        "libopenblas is not mapped into the test process"
    );
}

//! Int8 activations on NdArray ([`moq_burn::Activations`]): a weight asked for them multiplies
//! through `moq-core`'s int8 kernel, close to the exact f32 path for every width and grid; words
//! replaced by a mapper or a record leave the old tiles unused; inputs of more rows than int8
//! pays for take the f32 path; groups that split the kernel's
//! tiles keep f32 activations; `load_codes_with` serves a model so and reports it.

use burn::module::ModuleMapper;
use burn::tensor::{Int, TensorPrimitive};
use moq_burn::moq_core::export::Exported;
use moq_burn::{
    Activations, Held, MoqLinear, PackedWeight, QuantizedLinear, Unservable, load_codes,
    load_codes_with,
};
use moq_core::{CodeLayout, ScaleFormat, pack, quantize};

use crate::common::*;

/// A `[k, n]` weight quantized at `bits` in `groups` groups, as an export.
fn exported(k: usize, n: usize, bits: u32, quant_type: QuantType, groups: usize) -> Exported {
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 29 % 97) as f32 - 48.0) / 40.0)
        .collect();
    let q = quantize("w", &w, &QuantSpec::new(bits, quant_type, groups)).unwrap();
    Exported {
        name: "fc.weight".into(),
        shape: vec![k, n],
        packed: pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap(),
    }
}

fn input(m: usize, k: usize) -> Tensor<Inner, 2> {
    let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
    Tensor::from_data(TensorData::new(x, [m, k]), &Default::default())
}

/// `‖a − b‖ / ‖b‖`.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let norm = |v: &mut dyn Iterator<Item = f32>| v.map(|x| x * x).sum::<f32>().sqrt();
    norm(&mut a.iter().zip(b).map(|(x, y)| x - y)) / norm(&mut b.iter().copied())
}

#[test]
fn int8_activations_stay_close_to_the_f32_path_for_every_width_and_grid() {
    let device = Default::default();
    // Groups of 16 along rows of 48 (3 lanes) and whole-row groups (k·n / 8 values each).
    let (k, n) = (70, 48);
    for bits in 1..=8u32 {
        let types: &[QuantType] = if bits <= 2 {
            &[QuantType::Symmetric]
        } else {
            &[QuantType::Symmetric, QuantType::Asymmetric]
        };
        for (&quant_type, groups) in types.iter().flat_map(|t| [(t, k * n / 16), (t, 10)]) {
            let e = exported(k, n, bits, quant_type, groups);
            let exact = QuantizedLinear::<Inner>::from_export(&e, None, &device).unwrap();
            let mut fast = exact.clone();
            fast.weight = fast.weight.with_activations(Activations::Int8).unwrap();
            assert_eq!(exact.weight.activations(), Activations::F32);
            assert_eq!(fast.weight.activations(), Activations::Int8);
            for m in [1, 5] {
                let (a, b) = (
                    values(fast.forward(input(m, k))),
                    values(exact.forward(input(m, k))),
                );
                let err = relative_error(&a, &b);
                let case = format!("{bits} bits {quant_type:?}, {groups} groups, m = {m}");
                assert!(err < 0.02, "{case}: relative error {err}");
                // The int8 kernel ran: its rounding shows.
                assert!(a != b, "{case}: the same output as the f32 path");
            }
            // More rows than int8 activations pay for: the exact f32 path.
            let m = moq_core::matmul::INT8_MAX_ROWS + 1;
            assert_eq!(
                values(fast.forward(input(m, k))),
                values(exact.forward(input(m, k))),
                "{bits} bits {quant_type:?}, {m} rows"
            );
        }
    }
}

/// Replaces every int parameter with zeros of its shape and dtype.
struct ZeroInts;

impl ModuleMapper<Inner> for ZeroInts {
    fn map_int<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<Inner, D, Int>>,
    ) -> burn::module::Param<Tensor<Inner, D, Int>> {
        let (id, tensor, mapper) = param.consume();
        let zeros = tensor.zeros_like();
        burn::module::Param::from_mapped_value(id, zeros, mapper)
    }
}

#[test]
fn tiles_of_replaced_words_are_not_used() {
    let device = Default::default();
    let (k, n) = (64, 32);
    let e = exported(k, n, 4, QuantType::Symmetric, k * n / 32);
    let mut layer = QuantizedLinear::<Inner>::from_export(&e, None, &device).unwrap();
    layer.weight = layer.weight.with_activations(Activations::Int8).unwrap();
    let x = input(2, k);
    // Mapped to zero words, the layer computes with them (zero codes), not with the old tiles.
    let mapped = layer.clone().map(&mut ZeroInts);
    let f32_path = |w: &PackedWeight<Inner>| {
        let fresh =
            PackedWeight::<Inner>::from_parts(w.words(), w.scales(), w.zero_points(), w.shape())
                .unwrap();
        let y = <Inner as moq_burn::MoqBackend>::quantized_matmul(
            x.clone().into_primitive().tensor(),
            &fresh,
        )
        .unwrap();
        values(Tensor::<Inner, 2>::from_primitive(TensorPrimitive::Float(
            y,
        )))
    };
    assert_eq!(values(mapped.forward(x.clone())), f32_path(&mapped.weight));
    assert!(values(layer.forward(x.clone())) != f32_path(&mapped.weight));
    // A record loaded into a weight with tiles of other words (a buffer of their own): the
    // loaded words are multiplied exactly, not through the template's tiles.
    let mut template = QuantizedLinear::<Inner>::from_export(&e, None, &device).unwrap();
    template.weight = template.weight.with_activations(Activations::Int8).unwrap();
    let loaded = template.load_record(layer.clone().into_record());
    assert_eq!(values(loaded.forward(x.clone())), f32_path(&loaded.weight));
}

#[test]
fn groups_that_split_tiles_keep_f32_activations() {
    let device = Default::default();
    // Groups of 12 values along rows of 48 split the kernel's tiles of 8 columns.
    let e = exported(16, 48, 4, QuantType::Symmetric, 16 * 48 / 12);
    let layer = QuantizedLinear::<Inner>::from_export(&e, None, &device).unwrap();
    let err = layer
        .weight
        .clone()
        .with_activations(Activations::Int8)
        .unwrap_err()
        .to_string();
    assert!(err.contains("groups of 12") && err.contains("8"), "{err}");
}

/// Two `MoqLinear` layers, the second with groups the int8 kernel cannot tile.
#[derive(Module, Debug)]
struct Pair<B: Backend> {
    fc1: MoqLinear<B>,
    fc2: MoqLinear<B>,
}

#[test]
fn load_codes_with_int8_serves_and_reports_them() {
    use burn::nn::LinearConfig;
    use moq_core::export::MoqFile;
    let device = Default::default();
    let pair = || Pair::<Inner> {
        fc1: MoqLinear::new(&LinearConfig::new(64, 32).with_bias(false), &device),
        fc2: MoqLinear::new(&LinearConfig::new(32, 24).with_bias(false), &device),
    };
    let mut fc1 = exported(64, 32, 4, QuantType::Symmetric, 64);
    fc1.name = "fc1.weight".into();
    let mut fc2 = exported(32, 24, 3, QuantType::Asymmetric, 32 * 24 / 12);
    fc2.name = "fc2.weight".into();
    let file = MoqFile {
        quantized: vec![fc1, fc2],
        float: Vec::new(),
    };
    let (mut exact, mut fast) = (pair(), pair());
    let plain = load_codes(&mut exact, &file, Unservable::Refuse).unwrap();
    let report = load_codes_with(&mut fast, &file, Unservable::Refuse, Activations::Int8).unwrap();
    let held: Vec<&Held> = report.tensors.iter().map(|t| &t.held).collect();
    let int8 = Held::Codes {
        activations: Activations::Int8,
    };
    let f32 = Held::Codes {
        activations: Activations::F32,
    };
    assert_eq!(held, [&int8, &f32]);
    // fc1's tiles are counted: more bytes than the f32 load; fc2's are the same.
    let bytes = |r: &moq_burn::LoadReport, i: usize| r.tensors[i].device_bytes;
    assert!(bytes(&report, 0) > bytes(&plain, 0));
    assert_eq!(bytes(&report, 1), bytes(&plain, 1));
    assert!(report.to_string().contains("4-bit codes, int8 activations"));
    let x = input(3, 64);
    let forward = |p: &Pair<Inner>| values(p.fc1.forward(x.clone()));
    let err = relative_error(&forward(&fast), &forward(&exact));
    assert!(err > 0.0 && err < 0.02, "relative error {err}");
}

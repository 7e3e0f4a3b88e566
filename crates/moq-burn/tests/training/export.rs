//! Export and inference: the codes hold the trained weights, burn's quantized tensors hold the
//! codes, and a `QuantizedLinear` twin computes what the trained model computes.

use crate::common::*;

#[test]
fn export_gives_the_trained_weights_as_codes() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let cfg = config(8, 4, 2, 0);
    let mut optim = Moq::new(cfg)
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    let err = optim.export(&model).unwrap_err().to_string();
    assert!(err.contains("no quantizing step"), "{err}");
    for step in 0..40 {
        let g = grads(&model, step);
        model = optim.step(1e-2, model, g);
    }
    assert_eq!(optim.layer_bits(), [Some(4); 3]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    optim.export(&model).unwrap().save(&path).unwrap();
    let file = moq_core::export::MoqFile::load(&path).unwrap();

    let mut names: Vec<&str> = file.quantized.iter().map(|e| e.name.as_str()).collect();
    let mut expected = optim.quantized_params();
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected);
    let weights = [
        ("layers.0.weight", values(model.layers[0].weight.val())),
        ("layers.1.weight", values(model.layers[1].weight.val())),
        ("head.weight", values(model.head.weight.val())),
    ];
    for (name, used) in weights {
        let e = file.quantized.iter().find(|e| e.name == name).unwrap();
        assert_eq!(e.packed.bits, 4);
        let q = moq_core::unpack(&e.packed).unwrap();
        let mut back = vec![0.0f32; used.len()];
        moq_core::dequantize(&q, &mut back).unwrap();
        assert_eq!(
            back, used,
            "{name}: the codes give the weights the model used"
        );
        // Eight 4-bit codes per word, each row padded to whole words, and 4 f32 scales.
        let (rows, row_len) = (e.shape[0], e.shape[1]);
        assert_eq!(
            e.packed.size_bytes(),
            rows * row_len.div_ceil(8) * 4 + 4 * 4,
            "{name}"
        );
    }
    let bias = |name: &str| {
        file.float
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.clone())
    };
    assert_eq!(file.float.len(), 3);
    for (name, layer) in [
        ("layers.0.bias", &model.layers[0]),
        ("layers.1.bias", &model.layers[1]),
        ("head.bias", &model.head),
    ] {
        assert_eq!(
            bias(name),
            Some(values(layer.bias.as_ref().unwrap().val())),
            "{name}"
        );
    }

    // Back into a fresh model: every parameter equals the trained model's.
    let reloaded = moq_burn::load_dequantized(Net::<B>::new(&device), &file).unwrap();
    assert_eq!(
        values(reloaded.head.weight.val()),
        values(model.head.weight.val())
    );
    assert_eq!(
        values(reloaded.layers[1].bias.as_ref().unwrap().val()),
        values(model.layers[1].bias.as_ref().unwrap().val())
    );
    let mut other = file.clone();
    other.float.retain(|(n, _, _)| n != "head.bias");
    let err = moq_burn::load_dequantized(Net::<B>::new(&device), &other).unwrap_err();
    assert!(err.to_string().contains("no tensor `head.bias`"), "{err}");

    // The head as a QuantizedLinear computes what the trained head computes.
    let head = file
        .quantized
        .iter()
        .find(|e| e.name == "head.weight")
        .unwrap();
    let bias = bias("head.bias").unwrap();
    let q = moq_burn::QuantizedLinear::<Inner>::from_export(head, Some(&bias), &device).unwrap();
    assert_eq!(q.weight.shape().bits, 4);
    let x = Tensor::<Inner, 2>::from_data(
        TensorData::new(
            (0..48).map(|i| (i as f32 * 0.3).cos()).collect::<Vec<_>>(),
            [3, 16],
        ),
        &device,
    );
    let trained = model.valid().head.forward(x.clone());
    assert_eq!(values(q.dequantized()), values(model.head.weight.val()));
    let got = values(q.forward(x));
    for (a, b) in got.iter().zip(values(trained)) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }
    let err = moq_burn::QuantizedLinear::<Inner>::from_export(head, Some(&[0.0; 3]), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias has 3 values for 4 outputs"), "{err}");
}

/// burn's own quantized tensors from MoQ codes dequantize to exactly the values of the codes
/// (NdArray loads Q8S only in burn 0.21; the wgpu tests cover Q4S); layouts burn has no
/// scheme for are named.
#[test]
fn burn_quantized_tensors_hold_the_codes() {
    use moq_core::{CodeLayout, ScaleFormat, pack, quantize, unpack};
    type B = NdArray;
    let device = Default::default();
    let (k, n) = (6, 64);
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
        .collect();
    for (bits, groups, scales) in [(8, 1, ScaleFormat::F32), (8, 12, ScaleFormat::F16)] {
        let q = quantize("w", &w, &QuantSpec::new(bits, QuantType::Symmetric, groups)).unwrap();
        let packed = pack(&q, n, CodeLayout::Packed32, scales).unwrap();
        let data = moq_burn::to_burn_data(&packed, &[k, n]).unwrap();
        let got = Tensor::<B, 2>::from_data(data, &device)
            .dequantize()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let mut expected = vec![0.0f32; k * n];
        moq_core::dequantize(&unpack(&packed).unwrap(), &mut expected).unwrap();
        assert_eq!(got, expected, "{bits} bits, {groups} groups");
    }
    let refused = |bits, quant_type, groups, what: &str| {
        let q = quantize("w", &w, &QuantSpec::new(bits, quant_type, groups)).unwrap();
        let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
        let err = moq_burn::burn_scheme(&packed, &[k, n])
            .unwrap_err()
            .to_string();
        assert!(err.contains(what), "{err}");
    };
    refused(4, QuantType::Asymmetric, 6, "symmetric only");
    refused(3, QuantType::Symmetric, 6, "3-bit");
    refused(2, QuantType::Symmetric, 6, "Q2S");
    // Groups of 96 straddle rows of 64: not blocks.
    refused(8, QuantType::Symmetric, 4, "not blocks");
    // Groups of two whole rows are blocks of [2, 64].
    let q = quantize("w", &w, &QuantSpec::new(8, QuantType::Symmetric, 3)).unwrap();
    let packed = pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap();
    let scheme = moq_burn::burn_scheme(&packed, &[k, n]).unwrap();
    assert_eq!(format!("{:?}", scheme.level), "Block(BlockSize([2, 64]))");
}

/// The inference twin of a trained model: each layer a `QuantizedLinear` at the bits it reached
/// (here 4, 3 and 6), computing what the trained (fake-quantized) model computes.
#[test]
fn quantized_twin_keeps_each_layers_bits_and_outputs() {
    use moq_burn::QuantizedLinear;
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    let mut optim = Moq::new(config(8, 4, 2, 0))
        .bits_for("layers.1", 8, 3)
        .bits_for("head", 8, 6)
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    for step in 0..80 {
        let g = grads(&model, step);
        model = optim.step(1e-2, model, g);
    }
    let file = optim.export(&model).unwrap();
    let twin: Vec<QuantizedLinear<Inner>> = ["layers.0", "layers.1", "head"]
        .iter()
        .map(|p| QuantizedLinear::load(&file, p, &device).unwrap())
        .collect();
    assert_eq!(
        twin.iter()
            .map(|l| l.weight.shape().bits)
            .collect::<Vec<_>>(),
        [4, 3, 6]
    );
    let x = batch(3).inner();
    let hidden = twin[..2].iter().fold(x.clone(), |x, l| {
        burn::tensor::activation::tanh(l.forward(x))
    });
    let got = values(twin[2].forward(hidden));
    let expected = values(model.valid().forward(x));
    for (a, b) in got.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    let err = QuantizedLinear::<Inner>::load(&file, "layers.2", &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no quantized tensor `layers.2.weight`"),
        "{err}"
    );
}

/// `QuantizedLinear` on NdArray runs `moq-core`'s CPU kernel on the tensors' buffers: for every
/// width and grid, at odd shapes and a rank-3 input, it equals the tensor-ops path (dequantize,
/// then burn's matmul) and the dequantized weight times the input; a wrong input width is named.
#[test]
fn quantized_linear_on_ndarray_runs_the_cpu_kernel() {
    use moq_burn::moq_core::export::Exported;
    use moq_burn::{PackedWeight, QuantizedLinear, quantized_matmul_tensor_ops};
    use moq_core::{CodeLayout, ScaleFormat, pack, quantize};
    let device = Default::default();
    let (k, n) = (37, 45);
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 29 % 97) as f32 - 48.0) / 40.0)
        .collect();
    for bits in 1..=8u32 {
        let types: &[QuantType] = if bits <= 2 {
            &[QuantType::Symmetric]
        } else {
            &[QuantType::Symmetric, QuantType::Asymmetric]
        };
        for &quant_type in types {
            let q = quantize("w", &w, &QuantSpec::new(bits, quant_type, 15)).unwrap();
            let e = Exported {
                name: "fc.weight".into(),
                shape: vec![k, n],
                packed: pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap(),
            };
            let layer = QuantizedLinear::<Inner>::from_export(&e, None, &device).unwrap();
            let x = Tensor::<Inner, 3>::from_data(
                TensorData::new(
                    (0..3 * 2 * k)
                        .map(|i| (i as f32 * 0.37).sin())
                        .collect::<Vec<_>>(),
                    [3, 2, k],
                ),
                &device,
            );
            let got = values(layer.forward(x.clone()));
            let generic = PackedWeight::<Inner>::from_parts(
                layer.weight.words(),
                layer.weight.scales(),
                layer.weight.zero_points(),
                layer.weight.shape(),
            )
            .unwrap();
            let x2 = x.clone().reshape([6, k]).into_primitive().tensor();
            let ops = Tensor::<Inner, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(
                quantized_matmul_tensor_ops::<Inner>(x2, &generic).unwrap(),
            ));
            let weight = layer.dequantized();
            let reference = values(x.reshape([6, k]).matmul(weight));
            for ((a, b), r) in got.iter().zip(values(ops)).zip(&reference) {
                assert!(
                    (a - b).abs() <= 1e-4 * r.abs().max(1.0),
                    "{bits} bits: {a} vs {b}"
                );
                assert!(
                    (a - r).abs() <= 1e-4 * r.abs().max(1.0),
                    "{bits} bits: {a} vs {r}"
                );
            }
        }
    }
    let q = quantize("w", &w, &QuantSpec::new(4, QuantType::Symmetric, 15)).unwrap();
    let e = Exported {
        name: "fc.weight".into(),
        shape: vec![k, n],
        packed: pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap(),
    };
    let layer = QuantizedLinear::<Inner>::from_export(&e, None, &device).unwrap();
    let err = layer
        .try_forward(Tensor::<Inner, 2>::zeros([2, k + 1], &device))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{}", k + 1)) && err.contains(&k.to_string()),
        "{err}"
    );
}

/// A `QuantizedLinear` saved and loaded as a burn record computes what it did (the loaded words
/// and zero points may come back in the backend's default int type; the CPU kernel reads both).
#[test]
fn quantized_linear_records_round_trip() {
    use moq_burn::QuantizedLinear;
    use moq_burn::moq_core::export::Exported;
    use moq_core::{CodeLayout, ScaleFormat, pack, quantize};
    let device = Default::default();
    let (k, n) = (40, 72);
    let w: Vec<f32> = (0..k * n)
        .map(|i| ((i * 31 % 89) as f32 - 44.0) / 30.0)
        .collect();
    let q = quantize("w", &w, &QuantSpec::new(5, QuantType::Asymmetric, 20)).unwrap();
    let e = Exported {
        name: "fc.weight".into(),
        shape: vec![k, n],
        packed: pack(&q, n, CodeLayout::Packed32, ScaleFormat::F32).unwrap(),
    };
    let layer = QuantizedLinear::<Inner>::from_export(&e, Some(&[0.5; 72]), &device).unwrap();
    let x = Tensor::<Inner, 2>::from_data(
        TensorData::new(
            (0..3 * k)
                .map(|i| (i as f32 * 0.29).cos())
                .collect::<Vec<_>>(),
            [3, k],
        ),
        &device,
    );
    let before = values(layer.forward(x.clone()));
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(layer.clone().into_record(), ()).unwrap();
    // The template has a bias too (burn loads a record into a module of the same structure).
    let fresh = QuantizedLinear::<Inner>::from_export(&e, Some(&[0.0; 72]), &device).unwrap();
    let loaded = fresh.load_record(recorder.load(bytes, &device).unwrap());
    assert_eq!(values(loaded.forward(x)), before);
}

#[test]
fn export_at_target_rounds_the_model_as_it_is_once() {
    let device = Default::default();
    let model = Net::<B>::new(&device);
    // A fresh wrapper, no step taken: post-training quantization of the model's weights at
    // the target (4 bits), not at the 12 bits the schedule starts from.
    let optim = Moq::new(config(12, 4, 2, 0))
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    let file = optim.export_at_target(&model).unwrap();
    assert_eq!(file.quantized.len(), 3);
    for e in &file.quantized {
        assert_eq!(e.packed.bits, 4, "{}", e.name);
        let weight = match e.name.as_str() {
            "layers.0.weight" => values(model.layers[0].weight.val()),
            "layers.1.weight" => values(model.layers[1].weight.val()),
            _ => values(model.head.weight.val()),
        };
        let mut spec = QuantSpec::new(4, QuantType::Symmetric, 4);
        spec.rounding = moq_core::Rounding::Nearest;
        let rounded = moq_core::quantize(&e.name, &weight, &spec).unwrap();
        let mut expected = vec![0.0f32; weight.len()];
        moq_core::dequantize(&rounded, &mut expected).unwrap();
        let mut back = vec![0.0f32; weight.len()];
        moq_core::dequantize(&moq_core::unpack(&e.packed).unwrap(), &mut back).unwrap();
        assert_eq!(back, expected, "{}", e.name);
        assert_ne!(
            back, weight,
            "{}: 4-bit codes are not the f32 weights",
            e.name
        );
    }
    // The plain export still refuses before any step.
    assert!(optim.export(&model).is_err());
}

#[test]
fn a_group_size_gives_each_parameter_its_own_group_count() {
    let device = Default::default();
    let mut model = Net::<B>::new(&device);
    // quantize_groups 2 is overridden: groups of 16 values in each weight (128, 256, 64 values).
    let mut optim = Moq::new(config(8, 4, 2, 0))
        .group_size(16)
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    for step in 0..40 {
        let g = grads(&model, step);
        model = optim.step(1e-2, model, g);
    }
    let file = optim.export(&model).unwrap();
    for (name, used, groups) in [
        ("layers.0.weight", values(model.layers[0].weight.val()), 8),
        ("layers.1.weight", values(model.layers[1].weight.val()), 16),
        ("head.weight", values(model.head.weight.val()), 4),
    ] {
        let e = file.quantized.iter().find(|e| e.name == name).unwrap();
        assert_eq!(e.packed.groups, groups, "{name}");
        let mut back = vec![0.0f32; used.len()];
        moq_core::dequantize(&moq_core::unpack(&e.packed).unwrap(), &mut back).unwrap();
        assert_eq!(
            back, used,
            "{name}: trained and exported with the same groups"
        );
    }

    let Err(err) = Moq::new(config(8, 4, 1, 0))
        .group_size(48)
        .init(AdamConfig::new().init(), &Net::<B>::new(&device))
    else {
        panic!("groups of 48 cannot split a weight of 128 values");
    };
    let err = err.to_string();
    assert!(
        err.contains("`layers.0.weight` has 128 values") && err.contains("groups of 48"),
        "{err}"
    );
}

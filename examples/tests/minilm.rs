//! all-MiniLM-L6-v2 on the real checkpoint (`scripts/fetch-minilm model` first; `scripts/test
//! minilm` fetches it and runs these): the port against an independent numpy forward pass, and
//! the MoQ export served by its `MoqLinear` layers (`moq_burn::load_codes`).

use std::io::Write;
use std::process::{Command, Stdio};

use burn::backend::NdArray;
use burn::tensor::Tensor;
use moq_examples::minilm::{EMBED_MAX_LEN, ModelDir};

type B = NdArray;

/// Sentences of every kind the tokenizer meets: short, long (cut at 256 tokens), accents,
/// CJK, punctuation, digits, an empty line, mail-like text.
fn sentences() -> Vec<String> {
    let mut s: Vec<String> = [
        "The quick brown fox jumps over the lazy dog.",
        "A man is playing a guitar.",
        "Quantization-aware training keeps a model's accuracy at 4 bits.",
        "Crème brûlée, naïve café, Straße — déjà vu.",
        "東京は日本の首都です。",
        "",
        "Subject: URGENT!!! You have WON $1,000,000 — click http://example.com/claim now",
        "  leading and trailing spaces   ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    s.push("the weights are read from memory once per token ".repeat(40));
    s
}

fn numpy_embeddings(dir: &ModelDir, ids: &[Vec<u32>], mask: &[Vec<u32>]) -> Vec<Vec<f64>> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/minilm_reference.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .arg(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (the reference needs python3 with numpy)");
    let input = serde_json::json!({ "ids": ids, "mask": mask }).to_string();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the numpy reference failed");
    serde_json::from_slice(&out.stdout).expect("the reference prints JSON")
}

#[test]
fn embeddings_match_an_independent_numpy_forward_pass() {
    let dir = ModelDir::new(None);
    let device = Default::default();
    let encoder = dir
        .encoder::<B>(&device)
        .expect("scripts/fetch-minilm model first");
    let tokenizer = dir.tokenizer(EMBED_MAX_LEN).unwrap();
    let sentences = sentences();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let encoded = tokenizer.encode(&texts).unwrap();
    assert_eq!(
        encoded.len, EMBED_MAX_LEN,
        "the long sentence is cut at 256 tokens"
    );
    let rows: Vec<usize> = (0..encoded.rows).collect();
    let ours: Tensor<B, 2> = encoder.embed(&encoded.batch(&rows, &device));
    let d = ours.dims()[1];
    let ours = ours.into_data().into_vec::<f32>().unwrap();
    let split = |v: &[u32]| {
        v.chunks(encoded.len)
            .map(<[u32]>::to_vec)
            .collect::<Vec<_>>()
    };
    let reference = numpy_embeddings(&dir, &split(&encoded.ids), &split(&encoded.mask));
    assert_eq!(reference.len(), sentences.len());
    let mut worst = f64::INFINITY;
    for (i, (a, b)) in ours.chunks(d).zip(&reference).enumerate() {
        assert_eq!(b.len(), d);
        let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum();
        let na = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let nb = b.iter().map(|y| y * y).sum::<f64>().sqrt();
        let cosine = dot / (na * nb);
        worst = worst.min(cosine);
        assert!(
            cosine >= 0.9999,
            "sentence {i} ({:?}): cosine {cosine}",
            sentences[i].chars().take(40).collect::<String>()
        );
    }
    println!(
        "largest 1 - cosine to the numpy reference: {:.1e}",
        1.0 - worst
    );
}

#[test]
fn a_moq_fine_tune_served_from_its_export_computes_what_it_computed() {
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use moq_burn::Moq;
    use moq_burn::moq_core::QuantizeConfig;
    use moq_burn::moq_core::export::MoqFile;
    use moq_examples::minilm::{TextClassifier, labels, serve, spam};

    type A = Autodiff<B>;
    let dir = ModelDir::new(None);
    let device = Default::default();
    let config = dir.config().unwrap();
    let mut model = TextClassifier::new(
        dir.encoder::<A>(&device)
            .expect("scripts/fetch-minilm model first"),
        &config,
        spam::CLASSES,
        &device,
    );
    let texts = [
        "Subject: meeting moved. The review is on Thursday at ten, same room.",
        "Subject: FREE VIAGRA!!! Lowest prices, no prescription, order now",
        "Subject: Re: patch for the build. It fails on ARM, see the log attached.",
        "Subject: Make $5000 a week from home. Click here to unsubscribe.",
    ];
    let tokenizer = dir.tokenizer(32).unwrap();
    let encoded = tokenizer.encode(&texts).unwrap();
    let y = [0i64, 1, 0, 1];
    let rows: Vec<usize> = (0..texts.len()).collect();
    // 5 → 4 bits in two steps, 1152 groups (of 128 and 512 weights), every encoder weight.
    let cfg = QuantizeConfig::builder()
        .bits(5, 4)
        .period(1)
        .schedule_offset(0)
        .groups(1152)
        .build()
        .unwrap();
    let mut optim = Moq::new(cfg)
        .include("bert.encoder")
        .layers("bert.encoder.layer.{i}")
        .init(AdamConfig::new().init(), &model)
        .unwrap();
    assert_eq!(
        optim.quantized_params().len(),
        6 * 6,
        "every encoder linear weight"
    );
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    for _ in 0..3 {
        let batch = encoded.batch::<A>(&rows, &device);
        let loss = loss_fn.forward(model.forward(&batch), labels(&y, &rows, &device));
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
    }
    assert_eq!(optim.layer_bits(), vec![Some(4); 6]);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("minilm-4bit.safetensors");
    optim.export(&model).unwrap().save(&path).unwrap();
    let served = serve::<B>(
        &MoqFile::load(&path).unwrap(),
        &config,
        spam::CLASSES,
        &device,
    )
    .unwrap();

    let batch = encoded.batch::<B>(&rows, &device);
    let expected = model
        .valid()
        .forward(&batch)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let got = served.forward(&batch).into_data().to_vec::<f32>().unwrap();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (g - e).abs() <= 1e-4 * scale.max(1.0),
            "logit {i}: served {g}, fake-quantized {e}"
        );
    }
    // Four bits per weight: the encoder's linear weights take about an eighth of their f32
    // bytes in the file (codes plus one f32 scale per group).
    let linear_f32 = 4 * 6 * (4 * 384 * 384 + 2 * 384 * 1536);
    let file = MoqFile::load(&path).unwrap();
    let codes: usize = file.quantized.iter().map(|e| e.packed.size_bytes()).sum();
    assert!(
        codes * 7 < linear_f32,
        "codes {codes} B, f32 {linear_f32} B"
    );
}

//! MiniLM on the CPU, part of the `cpu_matmul` run: sentences per second for all-MiniLM-L6-v2's
//! f32 encoder (burn NdArray's `Linear`) and the same encoder with every dense weight quantized
//! to W8 and W4 (symmetric, groups of 128, round to nearest) and served by the same model's
//! `MoqLinear` layers (`moq_burn::load_codes_with`), as a user serves a MoQ export: with f32
//! activations (the default) and with int8 activations. The sentences are SpamAssassin mails
//! (subject and body), cut at 16 tokens (a sentence) and at 128 (a paragraph);
//! `scripts/fetch-minilm` fetches model and corpus, and without them this part is skipped with
//! a line saying so.
//!
//! Besides the times it prints how far each quantized encoder's sentence embeddings are from
//! the f32 ones (the smallest cosine over the batch), and fails when one is not finite.

use anyhow::{Result, bail};
use burn::backend::NdArray;
use burn::module::Param;
use burn::tensor::Tensor;
use moq_burn::path::{NamedVisitor, visit_named};
use moq_burn::{Activations, Unservable, load_codes_with};
use moq_core::export::{Exported, MoqFile};
use moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, pack, quantize};
use moq_examples::minilm::spam::Corpus;
use moq_examples::minilm::{Bert, ModelDir};

use super::timed;

type B = NdArray;

/// `bert` with every dense weight of the encoder quantized to `bits` (groups of `group`
/// weights) and served by its `MoqLinear` layers (`load_codes_with`, taking `activations`);
/// also the bytes of codes and scales.
fn quantized(
    bert: Bert<B>,
    bits: u32,
    group: usize,
    activations: Activations,
) -> Result<(Bert<B>, usize)> {
    struct Params(Vec<(String, Vec<usize>, Vec<f32>)>);
    impl NamedVisitor<B> for Params {
        fn visit_named<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            let shape = param.dims().to_vec();
            let values = param.val().into_data().to_vec::<f32>().unwrap_or_default();
            self.0.push((path.to_owned(), shape, values));
        }
    }
    let mut params = Params(Vec::new());
    visit_named(&bert, &mut params);
    let mut code_bytes = 0;
    let mut file = MoqFile::default();
    for (path, shape, w) in params.0 {
        let &[k, n] = shape.as_slice() else {
            file.float.push((path, shape, w));
            continue;
        };
        if !path.starts_with("encoder.") {
            file.float.push((path, shape, w));
            continue;
        }
        let spec = QuantSpec::new(bits, QuantType::Symmetric, k * n / group);
        let packed = pack(
            &quantize(&path, &w, &spec)?,
            n,
            CodeLayout::Packed32,
            ScaleFormat::F32,
        )?;
        code_bytes += packed.size_bytes();
        file.quantized.push(Exported {
            name: path,
            shape,
            packed,
        });
    }
    let mut bert = bert;
    load_codes_with(&mut bert, &file, Unservable::Refuse, activations)?;
    Ok((bert, code_bytes))
}

/// The encoder's dense weights' bytes in f32.
fn f32_bytes(bert: &Bert<B>) -> usize {
    struct Bytes(usize);
    impl NamedVisitor<B> for Bytes {
        fn visit_named<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            if D == 2 && path.starts_with("encoder.") {
                self.0 += 4 * param.dims().iter().product::<usize>();
            }
        }
    }
    let mut bytes = Bytes(0);
    visit_named(bert, &mut bytes);
    bytes.0
}

/// The smallest cosine between the rows of two `[batch, d]` embeddings (1 for equal rows).
fn min_cosine(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Result<f32> {
    let d = a.dims()[1];
    let (a, b) = (
        a.into_data().to_vec::<f32>()?,
        b.into_data().to_vec::<f32>()?,
    );
    let mut worst = 1.0f32;
    for (x, y) in a.chunks(d).zip(b.chunks(d)) {
        let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
        let cos = dot / (norm(x) * norm(y)).max(f32::MIN_POSITIVE);
        if !cos.is_finite() {
            bail!("an embedding is not finite");
        }
        worst = worst.min(cos);
    }
    Ok(worst)
}

/// Times the five encoders (f32; W8 and W4 with f32 and with int8 activations) on each
/// `(mails, tokens)` case (mails per call, each cut at `tokens`; median of `rounds` calls) and
/// prints one table row per case and encoder.
pub fn run(cases: &[(usize, usize)], group: usize, rounds: usize) -> Result<()> {
    let dir = ModelDir::new(None);
    let corpus_dir = moq_examples::minilm::spam::default_dir();
    if !dir.0.join("model.safetensors").is_file() || !corpus_dir.is_dir() {
        println!(
            "\n(MiniLM sentences per second skipped: `scripts/fetch-minilm` fetches the model \
             into {} and the mails into {})",
            dir.0.display(),
            corpus_dir.display()
        );
        return Ok(());
    }
    let device = Default::default();
    let most = cases.iter().map(|c| c.0).max().unwrap_or(1);
    let corpus = Corpus::load(None, most)?;
    let texts: Vec<&str> = corpus.test.iter().map(|m| m.text.as_str()).collect();
    let f32_model = dir.encoder::<B>(&device)?;
    let mut encoders = vec![("f32".to_string(), f32_model.clone(), f32_bytes(&f32_model))];
    for (activations, name) in [(Activations::F32, ""), (Activations::Int8, ", int8 act.")] {
        for bits in [8, 4] {
            let (model, bytes) = quantized(f32_model.clone(), bits, group, activations)?;
            encoders.push((format!("W{bits}{name}"), model, bytes));
        }
    }
    println!(
        "\nall-MiniLM-L6-v2 on the CPU: sentence embeddings of held-out SpamAssassin mails, each \
         cut at `tokens` (a batch is padded to its longest); the encoder's 36 dense weights in \
         f32, W8 and W4 (groups of {group}), the quantized ones served with f32 and with int8 \
         activations; median of {rounds} calls\n"
    );
    println!(
        "| mails | tokens | encoder | weights MB | time | sentences/s | f32 time / this \
         | min cos to f32 |"
    );
    println!("|{}", " --- |".repeat(8));
    for &(n, max_len) in cases {
        let encoded = dir
            .tokenizer(max_len)?
            .encode(&texts[..n.min(texts.len())])?;
        let rows: Vec<usize> = (0..encoded.rows).collect();
        let batch = encoded.batch::<B>(&rows, &device);
        let tokens = batch.ids.dims()[1];
        let reference = f32_model.embed(&batch);
        // The f32 encoder comes first: its time is the ratios' baseline.
        let mut t32 = None;
        for (name, model, bytes) in &encoders {
            let cos = min_cosine(model.embed(&batch), reference.clone())?;
            let t = timed(rounds, || model.embed(&batch));
            let t32 = *t32.get_or_insert(t);
            println!(
                "| {} | {tokens} | {name} | {:.1} | {:.1} ms | {:.1} | {:.2} | {cos:.5} |",
                rows.len(),
                *bytes as f64 / 1e6,
                t.as_secs_f64() * 1e3,
                rows.len() as f64 / t.as_secs_f64(),
                t32.as_secs_f64() / t.as_secs_f64(),
            );
        }
    }
    println!("(f32 time / this > 1: the encoder is faster than f32)");
    Ok(())
}

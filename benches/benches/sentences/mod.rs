//! MiniLM on the CPU, part of the `cpu_matmul` run: sentences per second for all-MiniLM-L6-v2's
//! f32 encoder (burn NdArray's `Linear`) and the same encoder with every dense weight quantized
//! to W8 and W4 (symmetric, groups of 128, round to nearest) and served by the same model's
//! `MoqLinear` layers (`moq_burn::load_codes`), as a user serves a MoQ export. The sentences are SpamAssassin mails
//! (subject and body), cut at 16 tokens (a sentence) and at 128 (a paragraph); `scripts/fetch-minilm` fetches model and corpus, and
//! without them this part is skipped with a line saying so.
//!
//! Besides the times it prints how far each quantized encoder's sentence embeddings are from
//! the f32 ones (the smallest cosine over the batch), and fails when one is not finite.

use std::time::Duration;

use anyhow::{Result, bail};
use burn::backend::NdArray;
use burn::module::Param;
use burn::tensor::Tensor;
use moq_burn::path::{NamedVisitor, visit_named};
use moq_burn::{Unservable, load_codes};
use moq_core::export::{Exported, MoqFile};
use moq_core::{CodeLayout, QuantSpec, QuantType, ScaleFormat, pack, quantize};
use moq_examples::minilm::spam::Corpus;
use moq_examples::minilm::{Bert, ModelDir};

use super::timed;

type B = NdArray;

/// `bert` with every dense weight of the encoder quantized to `bits` (groups of `group`
/// weights) and served by its `MoqLinear` layers (`load_codes`); also the bytes of codes and
/// scales, and of the f32 weights.
fn quantized(bert: Bert<B>, bits: u32, group: usize) -> Result<(Bert<B>, usize, usize)> {
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
    let (mut code_bytes, mut f32_bytes) = (0, 0);
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
        f32_bytes += 4 * k * n;
        file.quantized.push(Exported {
            name: path,
            shape,
            packed,
        });
    }
    let mut bert = bert;
    load_codes(&mut bert, &file, Unservable::Refuse)?;
    Ok((bert, code_bytes, f32_bytes))
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

/// Times the three encoders on each `(mails, tokens)` case (mails per call, each cut at
/// `tokens`; median of `rounds` calls) and prints one table row per case.
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
    let (w8, w8_bytes, f32_bytes) = quantized(f32_model.clone(), 8, group)?;
    let (w4, w4_bytes, _) = quantized(f32_model.clone(), 4, group)?;
    println!(
        "\nall-MiniLM-L6-v2 on the CPU: sentence embeddings of held-out SpamAssassin mails, each \
         cut at `tokens` (a batch is padded to its longest); the encoder's 36 dense weights in \
         f32 ({:.1} MB), W8 ({:.1} MB) and W4 ({:.1} MB), groups of {group}; median of {rounds} \
         calls\n",
        f32_bytes as f64 / 1e6,
        w8_bytes as f64 / 1e6,
        w4_bytes as f64 / 1e6,
    );
    println!(
        "| mails | tokens | f32 | W8 | W4 | sentences/s f32 | W8 | W4 | f32/W8 | f32/W4 \
         | min cos W8 | min cos W4 |"
    );
    println!("|{}", " --- |".repeat(12));
    for &(n, max_len) in cases {
        let encoded = dir
            .tokenizer(max_len)?
            .encode(&texts[..n.min(texts.len())])?;
        let rows: Vec<usize> = (0..encoded.rows).collect();
        let batch = encoded.batch::<B>(&rows, &device);
        let tokens = batch.ids.dims()[1];
        let reference = f32_model.embed(&batch);
        let cos8 = min_cosine(w8.embed(&batch), reference.clone())?;
        let cos4 = min_cosine(w4.embed(&batch), reference)?;
        let t32 = timed(rounds, || f32_model.embed(&batch));
        let t8 = timed(rounds, || w8.embed(&batch));
        let t4 = timed(rounds, || w4.embed(&batch));
        let per_s = |t: Duration| format!("{:.1}", rows.len() as f64 / t.as_secs_f64());
        let ratio = |t: Duration| format!("{:.2}", t32.as_secs_f64() / t.as_secs_f64());
        let ms = |t: Duration| format!("{:.1} ms", t.as_secs_f64() * 1e3);
        println!(
            "| {} | {tokens} | {} | {} | {} | {} | {} | {} | {} | {} | {cos8:.5} | {cos4:.5} |",
            rows.len(),
            ms(t32),
            ms(t8),
            ms(t4),
            per_s(t32),
            per_s(t8),
            per_s(t4),
            ratio(t8),
            ratio(t4),
        );
    }
    println!("(f32/W8, f32/W4 > 1: the quantized encoder is faster)");
    Ok(())
}

//! all-MiniLM-L6-v2 in burn: sentence embeddings, and MoQ fine-tuning on real mail.
//!
//! ```text
//! scripts/fetch-minilm                       # the model and the corpus, once
//! cargo run --release -p moq-examples --bin minilm -- embed < sentences.txt
//! ```
//!
//! `embed` prints one JSON array of 384 floats per input line, in order: the sentence
//! embedding as sentence-transformers computes it (mean pooling under the attention mask, L2
//! normalisation, sequences cut at 256 tokens).
//!
//! `fine-tune` fine-tunes the encoder with a classification head on the SpamAssassin corpus
//! (spam or ham) five ways at each target width: full precision, PTQ (the full-precision
//! model rounded once), basic QAT, MoQ and MoQ with eigenvalues; every quantized model is
//! exported, served by its `MoqLinear` layers (`moq_burn::load_codes`) and must score what its fake-quantized self
//! scored. `--quick` is one seed at 4 bits with fewer steps.

mod args;
mod cells;
mod fine_tune;
mod publish;

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::backend::NdArray;
use clap::{Parser, Subcommand};
use moq_examples::minilm::{EMBED_MAX_LEN, ModelDir};
use moq_examples::run_on;

#[derive(Parser, Debug)]
#[command(about = "all-MiniLM-L6-v2 in burn: embeddings and MoQ fine-tuning")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sentence embeddings of stdin's lines, one JSON array per line, on NdArray.
    Embed {
        /// The model directory (`scripts/fetch-minilm` fills the default).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Sentences per forward pass.
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Fine-tune on spam/ham five ways at each target width and print the table.
    FineTune(args::Args),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Embed { model, batch } => embed(&ModelDir::new(model.as_deref()), batch.max(1)),
        Command::FineTune(args) => run_on(&args.backend.clone(), &args.resolved()),
    }
}

fn embed(dir: &ModelDir, batch: usize) -> Result<()> {
    type B = NdArray;
    let device = Default::default();
    let encoder = dir.encoder::<B>(&device)?;
    let tokenizer = dir.tokenizer(EMBED_MAX_LEN)?;
    let lines: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .collect::<Result<_, _>>()
        .context("cannot read the sentences from stdin")?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for chunk in lines.chunks(batch) {
        let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let encoded = tokenizer.encode(&texts)?;
        let rows: Vec<usize> = (0..encoded.rows).collect();
        let embeddings = encoder.embed(&encoded.batch::<B>(&rows, &device));
        let d = embeddings.dims()[1];
        let values = embeddings
            .into_data()
            .into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("embeddings are not f32: {e:?}"))?;
        for row in values.chunks(d) {
            serde_json::to_writer(&mut out, row)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

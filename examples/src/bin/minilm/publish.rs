//! The published section of `minilm fine-tune`: the accuracy and size tables with how they
//! were made, written into a markdown file.

use anyhow::Result;
use moq_examples::{results_path, write_section};

use crate::args::{LAYERS, Resolved, STEPS};

/// The results section of a table at `targets` after `steps`: `minilm-8-4bit` for 8 and 4
/// bits, `minilm-3bit-360steps` for 3 bits after 360 steps (the default steps go unnamed).
fn section_name(targets: &[u32], steps: u64) -> String {
    let mut name = format!("minilm-{}bit", list(targets, "-"));
    if steps != STEPS {
        name.push_str(&format!("-{steps}steps"));
    }
    name
}

/// `values` as text, `sep` between them.
fn list(values: &[u32], sep: &str) -> String {
    let text: Vec<String> = values.iter().map(u32::to_string).collect();
    text.join(sep)
}

/// Writes run `r`'s section to `--out` (docs/results.md with `--docs`): the accuracy `table`,
/// the size table's rows `sizes`, the schedule `notes` and the `minutes` of fine-tuning.
pub fn publish(
    r: &Resolved,
    table: &str,
    sizes: &[String],
    notes: &[String],
    minutes: f64,
) -> Result<()> {
    let args = &r.args;
    let mut command = format!(
        "cargo run --release -p moq-examples --bin minilm -- fine-tune --seeds {} --steps {} --targets {} --test {}",
        r.seeds,
        r.steps,
        list(&r.targets, ","),
        r.test
    );
    if args.first_seed != 0 {
        command.push_str(&format!(" --first-seed {}", args.first_seed));
    }
    if args.second_order {
        command.push_str(" --second-order");
    }
    if args.quick {
        command.push_str(" (= --quick)");
    }
    let widths = match r.targets.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", list(rest, ", ")),
        _ => list(&r.targets, ""),
    };
    let body = format!(
        "## all-MiniLM-L6-v2 fine-tuned on SpamAssassin (spam or ham) at {widths} bits\n\nProduced by `{command}` (backend {}, \
         {minutes:.0} min of fine-tuning). The pretrained sentence-transformers encoder (6 layers, d_model 384) with mean pooling and \
         a linear head, fine-tuned with Adam (lr {}, batch {}, {} tokens per mail, {} steps) from the same \
         pretrained weights for every variant; {} held-out mails. Every linear weight of the encoder is quantized \
         (quantize_groups {}), one schedule per encoder layer (`{LAYERS}`); the embeddings, layer norms, biases and \
         the head stay f32. PTQ rounds the full-precision fine-tune once, with no training at low bits. Every \
         quantized model is scored again from its export, served by its `MoqLinear` layers (`load_codes`), and the run stops if the two \
         differ. Schedules: {}. Test accuracy in %, mean ± std over {} seeds:\n\n{table}\nExport sizes (bytes; \
         the encoder's linear weights are codes plus one f32 scale per group, everything else f32):\n\n\
         | model | file | ratio to f32 | encoder linear weights | ratio to f32 |\n|---|---|---|---|---|\n{}\n",
        args.backend,
        args.lr,
        args.batch,
        args.max_len,
        r.steps,
        r.test,
        args.groups,
        notes.join("; "),
        r.seeds,
        sizes.join("\n"),
    );
    // One section per set of widths and steps (`minilm-8-4bit`, `minilm-3bit`), so a column
    // run later publishes beside the table it did not rerun.
    let out = results_path(&args.out, args.docs);
    write_section(&out, &section_name(&r.targets, r.steps), &body)?;
    println!("wrote the table to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_set_of_widths_and_steps_has_its_own_section() {
        assert_eq!(section_name(&[8, 4], STEPS), "minilm-8-4bit");
        assert_eq!(section_name(&[3], STEPS), "minilm-3bit");
        assert_eq!(section_name(&[3], 360), "minilm-3bit-360steps");
        assert_eq!(list(&[8, 4, 3], ", "), "8, 4, 3");
    }
}

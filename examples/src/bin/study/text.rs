//! The study's two sentence tasks on all-MiniLM-L6-v2 (`scripts/fetch-minilm model`) and the
//! Brown corpus (`scripts/fetch-brown`), split by document:
//! - `genre`: the encoder fine-tuned with a linear head to tell a sentence's genre (15);
//!   quality: held-out accuracy;
//! - `distill`: the encoder trained to reproduce the full-precision encoder's sentence
//!   embeddings (the teacher; loss 1 − cosine); quality: the mean cosine to the teacher on
//!   held-out sentences, and its 5th percentile.
//!
//! Both keep the encoder's linear weights in one MoQ layer per encoder layer
//! (`bert.encoder.layer.{i}`); embeddings, norms, biases and the head stay f32. The distill
//! model carries the classifier's head unused, so both tasks train one model type.

use std::collections::HashMap;

use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::AdamConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use moq_burn::moq_core::export::MoqFile;
use moq_burn::moq_hessian::HessianLoss;
use moq_burn::{Moq, MoqBackend};
use moq_examples::brown::Brown;
use moq_examples::minilm::{
    Bert, BertConfig, Encoded, ModelDir, Probe, TextClassifier, accuracy, labels, serve,
};
use moq_examples::study::{Grid, Outcome, StudyRun};
use moq_examples::{EigenCache, Experiment, Rng, Run, Trained, Variant, eigen_provider, train};

use crate::run::{self, Report};
use crate::{Args, Task};

const QUANTIZED: &str = "bert.encoder";
const LAYERS: &str = "bert.encoder.layer.{i}";

/// What a run costs and trains.
#[derive(Clone, Debug)]
struct Settings {
    batch: usize,
    max_len: usize,
    steps: u64,
    lr: f64,
    test: usize,
    min_words: usize,
    eigen_iters: u32,
    eigen_runs: u64,
}

impl Settings {
    fn new(quick: bool) -> Self {
        match quick {
            true => Self {
                batch: 4,
                max_len: 8,
                steps: 20,
                lr: 5e-5,
                test: 64,
                min_words: 5,
                eigen_iters: 2,
                eigen_runs: 1,
            },
            false => Self {
                batch: 16,
                max_len: 24,
                steps: 80,
                lr: 5e-5,
                test: 1000,
                min_words: 5,
                eigen_iters: 5,
                eigen_runs: 2,
            },
        }
    }
}

/// A sentence task: the tokenized sentences, their genres, the encoder's files.
pub struct TextStudy {
    args: Args,
    settings: Settings,
    grid: Grid,
    model: ModelDir,
    config: BertConfig,
    genres: usize,
    train: (Encoded, Vec<i64>),
    test: (Encoded, Vec<i64>),
    /// Eigenvalues of a model state computed once (the second-order cells of a seed share
    /// their warm-up).
    eigen_cache: EigenCache,
}

impl TextStudy {
    pub fn new(args: Args) -> Result<Self> {
        let settings = Settings::new(args.quick);
        let brown = Brown::load(&Brown::dir(args.corpus.as_deref()))?;
        let model = ModelDir::new(args.model.as_deref());
        let tokenizer = model.tokenizer(settings.max_len)?;
        let encode = |held_out: bool, count: Option<usize>| -> Result<(Encoded, Vec<i64>)> {
            let all = brown.sentences(held_out, settings.min_words);
            // The held-out sentences evenly spaced over every held-out document.
            let picked: Vec<(&str, usize)> = match count {
                Some(n) => (0..n.min(all.len()))
                    .map(|i| all[i * all.len() / n.min(all.len())])
                    .collect(),
                None => all,
            };
            let texts: Vec<&str> = picked.iter().map(|p| p.0).collect();
            Ok((
                tokenizer.encode(&texts)?,
                picked.iter().map(|p| p.1 as i64).collect(),
            ))
        };
        Ok(Self {
            config: model.config()?,
            genres: brown.genres.len(),
            train: encode(false, None)?,
            test: encode(true, Some(settings.test))?,
            grid: run::grid(args.quick.then(|| vec![run::g128(3)])),
            settings,
            model,
            args,
            eigen_cache: EigenCache::default(),
        })
    }

    fn task(&self) -> &'static str {
        match self.args.task {
            Task::Distill => "distill",
            _ => "genre",
        }
    }

    fn configuration(&self) -> String {
        format!(
            "study {} v1: {:?} grid {:?} {} train / {} test sentences backend {}",
            self.task(),
            self.settings,
            self.grid,
            self.train.1.len(),
            self.test.1.len(),
            self.args.backend
        )
    }
}

impl Experiment for TextStudy {
    fn run<B>(&self, device: B::Device) -> Result<()>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend,
    {
        let cells = run::cells(&self.args, self.task(), &self.configuration())?;
        println!(
            "{}: Brown corpus, {} train sentences, {} held out (every tenth document), {} genres; \
             all-MiniLM-L6-v2, {} tokens, batch {}; cells in {}",
            self.task(),
            self.train.1.len(),
            self.test.1.len(),
            self.genres,
            self.settings.max_len,
            self.settings.batch,
            cells.dir().display()
        );
        let teacher = self.model.encoder::<B::InnerBackend>(&device)?;
        let rows: Vec<usize> = (0..self.test.1.len()).collect();
        let test_teacher = teacher.embed(&self.test.0.batch(&rows, &device));
        let mut runner = TextRunner::<B> {
            study: self,
            device,
            teacher,
            test_teacher,
            full_precision: HashMap::new(),
        };
        run::run_grid(&self.args, &self.grid, &cells, |r| runner.run_cell(r))?;
        run::publish(&self.args, &self.grid, &cells, &self.report())
    }
}

impl TextStudy {
    fn report(&self) -> Report<'static> {
        let s = &self.settings;
        let common = format!(
            "all-MiniLM-L6-v2 (6 layers, d_model 384; its 36 encoder linear weights quantized, one \
             MoQ layer per encoder layer) trained {} Adam steps (lr {}, batch {} sentences of at most \
             {} tokens) by each method at each width, from the pretrained weights; Brown corpus \
             sentences of at least {} words, {} from the training documents, {} held out evenly \
             spaced over every tenth document; the same seed gives every method the same head and \
             batches. Quality of the model served from its export.",
            s.steps,
            s.lr,
            s.batch,
            s.max_len,
            s.min_words,
            self.train.1.len(),
            self.test.1.len()
        );
        match self.args.task {
            Task::Distill => Report {
                task: "distill",
                title: "embedding distillation",
                metric: "mean cosine to the full-precision embeddings",
                lower_is_better: false,
                secondary: Some("5th percentile of the cosines to the full-precision embeddings"),
                description: format!(
                    "The encoder trained to reproduce the full-precision encoder's sentence embeddings (loss 1 − cosine). {common}"
                ),
                notes: format!("Learning rates of the sweep are multiples of {}.", s.lr),
            },
            _ => Report {
                task: "genre",
                title: "Brown genre classification",
                metric: "held-out accuracy (15 genres)",
                lower_is_better: false,
                secondary: None,
                description: format!(
                    "Each sentence's genre, of {}, from mean-pooled embeddings and a linear head. {common}",
                    self.genres
                ),
                notes: format!("Learning rates of the sweep are multiples of {}.", s.lr),
            },
        }
    }
}

/// Runs the cells of one process.
struct TextRunner<'a, B: AutodiffBackend> {
    study: &'a TextStudy,
    device: B::Device,
    teacher: Bert<B::InnerBackend>,
    test_teacher: Tensor<B::InnerBackend, 2>,
    full_precision: HashMap<u64, TextClassifier<B>>,
}

impl<B> TextRunner<'_, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    /// The rows of step `step` of a run of `seed`: a seeded draw from the training sentences.
    fn rows(&self, seed: u64, step: u64) -> Vec<usize> {
        let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(step));
        let n = self.study.train.1.len();
        (0..self.study.settings.batch)
            .map(|_| rng.below(n))
            .collect()
    }

    fn loss(&self, seed: u64) -> impl Fn(&TextClassifier<B>, u64) -> Tensor<B, 1> + '_ {
        let ce = CrossEntropyLossConfig::new().init(&self.device);
        move |model: &TextClassifier<B>, step: u64| {
            let rows = self.rows(seed, step);
            let (encoded, genres) = &self.study.train;
            match self.study.args.task {
                Task::Distill => {
                    let target = self.teacher.embed(&encoded.batch(&rows, &self.device));
                    distill_loss(
                        model.bert.embed(&encoded.batch(&rows, &self.device)),
                        Tensor::from_inner(target),
                    )
                }
                _ => ce.forward(
                    model.forward(&encoded.batch(&rows, &self.device)),
                    labels(genres, &rows, &self.device),
                ),
            }
        }
    }

    fn start(&self, seed: u64) -> Result<TextClassifier<B>> {
        B::seed(&self.device, seed);
        let bert = self.study.model.encoder::<B>(&self.device)?;
        Ok(TextClassifier::new(
            bert,
            &self.study.config,
            self.study.genres,
            &self.device,
        ))
    }

    /// `seed`'s full-precision run: `steps` steps at `lr` from the pretrained encoder.
    fn train_full_precision(
        &self,
        seed: u64,
        steps: u64,
        lr: f64,
    ) -> Result<Trained<TextClassifier<B>>> {
        let r = Run {
            steps,
            lr,
            eigenvalues: None,
            evaluate: None,
            export: None,
        };
        train(self.start(seed)?, None, |m| m, r, self.loss(seed))
    }

    /// The full-precision model of `seed` (PTQ rounds it): from this process, or trained again
    /// when its cell came from an earlier one (a seed trains the same model every time).
    fn full_precision_of(&mut self, seed: u64) -> Result<TextClassifier<B>> {
        if let Some(m) = self.full_precision.get(&seed) {
            return Ok(m.clone());
        }
        println!(
            "    PTQ of seed {seed}: its full-precision cell is from an earlier process, so its \
             model is trained again"
        );
        let s = &self.study.settings;
        let trained = self.train_full_precision(seed, s.steps, s.lr)?;
        self.full_precision.insert(seed, trained.model.clone());
        Ok(trained.model)
    }

    fn run_cell(&mut self, run: &StudyRun) -> Result<Outcome> {
        let s = self.study.settings.clone();
        let steps = s.steps * run.budget;
        let lr = s.lr * run.lr_factor;
        let Some(width) = run.width else {
            let trained = self.train_full_precision(run.seed, steps, lr)?;
            self.full_precision.insert(run.seed, trained.model.clone());
            let (quality, secondary) = self.score(&trained.model.valid());
            let bytes = 4 * self.study.config.linear_weights() as u64;
            return Ok(Outcome {
                quality,
                secondary,
                bytes,
                widths: Vec::new(),
                seconds: trained.seconds,
            });
        };
        let eigen = run::EigenBudget {
            iters: s.eigen_iters,
            runs: s.eigen_runs,
        };
        let (cfg, customize) = run::quantized(run, width, steps, eigen, QUANTIZED, LAYERS)?;
        let variant = run.variant;
        if variant == Variant::Ptq {
            let timer = std::time::Instant::now();
            let fp = self.full_precision_of(run.seed)?;
            let optim = customize(Moq::new(cfg)).init(AdamConfig::new().init(), &fp)?;
            let file = optim.export_at_target(&fp)?;
            return self.served(&file, Vec::new(), timer.elapsed().as_secs_f64(), None);
        }
        let probe_rows = self.rows(run.seed ^ 0x5eed, 0);
        let (eigenvalues, _) =
            eigen_provider::<B, _>(Some(&cfg), || self.probe(&probe_rows), run.seed).unzip();
        let eigenvalues = eigenvalues.map(|p| self.study.eigen_cache.wrap::<B, _>(p, run.seed));
        let dir = exports_dir()?;
        let export = dir.join(format!("{}.safetensors", run.name()));
        let r = Run {
            steps,
            lr,
            eigenvalues,
            evaluate: None,
            export: Some(export.clone()),
        };
        let trained = train(
            self.start(run.seed)?,
            Some(cfg),
            customize,
            r,
            self.loss(run.seed),
        )?;
        let file = MoqFile::load(&export)?;
        std::fs::remove_file(&export).ok();
        let widths = trained.bits.iter().flatten().copied().collect();
        let fake = self.score(&trained.model.valid()).0;
        self.served(&file, widths, trained.seconds, Some(fake))
    }

    fn probe(&self, rows: &[usize]) -> TextProbe {
        let (encoded, genres) = &self.study.train;
        let classes = self.study.genres;
        match self.study.args.task {
            Task::Distill => {
                let target = self
                    .teacher
                    .embed(&encoded.batch::<B::InnerBackend>(rows, &self.device));
                TextProbe::Distill {
                    config: self.study.config.clone(),
                    classes,
                    encoded: encoded.select(rows),
                    target: target.into_data(),
                }
            }
            _ => TextProbe::Genre(Probe::new(
                self.study.config.clone(),
                classes,
                encoded.select(rows),
                rows.iter().map(|&r| genres[r]).collect(),
            )),
        }
    }

    /// The task's metric(s) of `model` on the held-out sentences.
    fn score(&self, model: &TextClassifier<B::InnerBackend>) -> (f64, Option<f64>) {
        let (encoded, genres) = &self.study.test;
        match self.study.args.task {
            Task::Distill => {
                let rows: Vec<usize> = (0..genres.len()).collect();
                let embedded = model.bert.embed(&encoded.batch(&rows, &self.device));
                let cos = (embedded * self.test_teacher.clone())
                    .sum_dim(1)
                    .into_data();
                let mut cos: Vec<f64> = cos.iter::<f32>().map(f64::from).collect();
                cos.sort_by(f64::total_cmp);
                let mean = cos.iter().sum::<f64>() / cos.len() as f64;
                (mean, Some(cos[cos.len() / 20]))
            }
            _ => (
                accuracy(|b| model.forward(b), encoded, genres, &self.device),
                None,
            ),
        }
    }

    /// An export's outcome: the model served from its codes, scored (it must score what the
    /// fake-quantized model, `fake`, scored).
    fn served(
        &self,
        file: &MoqFile,
        widths: Vec<u32>,
        seconds: f64,
        fake: Option<f64>,
    ) -> Result<Outcome> {
        let model =
            serve::<B::InnerBackend>(file, &self.study.config, self.study.genres, &self.device)?;
        let (quality, secondary) = self.score(&model);
        // Served and fake-quantized weights are the same numbers, multiplied in another
        // order: one held-out sentence may change class, a cosine may move in its 4th digit.
        let tolerance = match self.study.args.task {
            Task::Distill => 1e-3,
            _ => 1.0 / self.study.test.1.len() as f64 + 1e-9,
        };
        if let Some(fake) = fake
            && (quality - fake).abs() > tolerance
        {
            bail!("the model served from its export scores {quality}, the trained model {fake}");
        }
        let bytes = file
            .quantized
            .iter()
            .map(|e| e.packed.size_bytes() as u64)
            .sum();
        Ok(Outcome {
            quality,
            secondary,
            bytes,
            widths,
            seconds,
        })
    }
}

/// Where a run's export waits to be served (it is deleted after).
fn exports_dir() -> Result<std::path::PathBuf> {
    let dir = run::workspace().join("target/moq-exports/study");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// 1 − the mean cosine of `embedded` to `target` (both L2-normalised, `[batch, d]`).
fn distill_loss<B: Backend>(embedded: Tensor<B, 2>, target: Tensor<B, 2>) -> Tensor<B, 1> {
    (embedded * target).sum_dim(1).mean().neg().add_scalar(1.0)
}

/// The loss the Hessian eigenvalues are taken of, on a fixed batch.
enum TextProbe {
    Genre(Probe),
    Distill {
        config: BertConfig,
        classes: usize,
        encoded: Encoded,
        target: TensorData,
    },
}

impl HessianLoss for TextProbe {
    type Model<B: Backend> = TextClassifier<B>;

    fn model<B: Backend>(&self, device: &B::Device) -> TextClassifier<B> {
        match self {
            TextProbe::Genre(p) => p.model(device),
            TextProbe::Distill {
                config, classes, ..
            } => TextClassifier::new(Bert::new(config, device), config, *classes, device),
        }
    }

    fn loss<B: Backend>(&self, model: &TextClassifier<B>) -> Tensor<B, 1> {
        match self {
            TextProbe::Genre(p) => p.loss(model),
            TextProbe::Distill {
                encoded, target, ..
            } => {
                let device = model.device();
                let rows: Vec<usize> = (0..encoded.rows).collect();
                let target = Tensor::from_data(target.clone(), &device);
                distill_loss(model.bert.embed(&encoded.batch(&rows, &device)), target)
            }
        }
    }
}

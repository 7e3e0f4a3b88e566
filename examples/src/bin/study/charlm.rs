//! The `charlm` task: a GPT-style character model pretrained in full precision on the Brown
//! corpus' running text, then trained on by every method (the same batches for every method of
//! a seed); quality is held-out bits per character, from the model loaded back from its export.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::optim::AdamConfig;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use moq_burn::moq_core::export::MoqFile;
use moq_burn::{Moq, MoqBackend, load_dequantized};
use moq_examples::brown::Brown;
use moq_examples::charlm::{Batch, CharLm, Corpus, LmConfig, Probe, bits_per_char};
use moq_examples::study::{Grid, Outcome, StudyRun};
use moq_examples::{
    EigenCache, Experiment, Rng, Run, Variant, eigen_provider, schedule_note, train, variant_config,
};

use crate::Args;
use crate::run::{self, Report};

/// The blocks' linear weights are quantized; embeddings, norms, biases and the head stay f32.
const QUANTIZED: &str = "blocks";
/// One schedule, eigenvalue and second-order width per decoder block.
const LAYERS: &str = "blocks.{i}";

/// What a run of the task costs and trains.
#[derive(Clone, Debug)]
struct Settings {
    lm: LmConfig,
    batch: usize,
    pretrain_steps: u64,
    pretrain_lr: f64,
    steps: u64,
    lr: f64,
    test_windows: usize,
    eigen_iters: u32,
    eigen_runs: u64,
}

impl Settings {
    fn new(quick: bool) -> Self {
        if quick {
            return Self {
                lm: LmConfig {
                    d_model: 32,
                    layers: 2,
                    heads: 2,
                    context: 16,
                },
                batch: 8,
                pretrain_steps: 60,
                pretrain_lr: 3e-3,
                steps: 40,
                lr: 1e-3,
                test_windows: 32,
                eigen_iters: 3,
                eigen_runs: 2,
            };
        }
        Self {
            lm: LmConfig {
                d_model: 128,
                layers: 4,
                heads: 4,
                context: 64,
            },
            batch: 32,
            pretrain_steps: 4000,
            pretrain_lr: 2e-3,
            steps: 400,
            lr: 5e-4,
            test_windows: 1024,
            eigen_iters: 6,
            eigen_runs: 2,
        }
    }
}

/// The task, its settings and its grid.
pub struct Study {
    args: Args,
    settings: Settings,
    grid: Grid,
    corpus: Corpus,
    /// Eigenvalues of a model state computed once (the second-order cells of a seed share
    /// their warm-up).
    eigen_cache: EigenCache,
}

impl Study {
    pub fn new(args: Args) -> Result<Self> {
        let corpus = Corpus::new(&Brown::load(&Brown::dir(args.corpus.as_deref()))?);
        Ok(Self {
            settings: Settings::new(args.quick),
            grid: run::grid(args.quick.then(|| vec![run::g128(3), run::per_tensor(4)])),
            corpus,
            args,
            eigen_cache: EigenCache::default(),
        })
    }

    /// Every setting that changes a result, for the cells' folder.
    fn configuration(&self) -> String {
        format!(
            "study charlm v1: {:?} grid {:?} corpus {} train / {} test characters backend {}",
            self.settings,
            self.grid,
            self.corpus.train.len(),
            self.corpus.test.len(),
            self.args.backend
        )
    }
}

impl Experiment for Study {
    fn run<B>(&self, device: B::Device) -> Result<()>
    where
        B: AutodiffBackend,
        B::InnerBackend: MoqBackend,
    {
        let cells = run::cells(&self.args, "charlm", &self.configuration())?;
        let s = &self.settings;
        println!(
            "charlm: Brown corpus, {} train / {} held-out characters (every tenth document held \
             out); d_model {}, {} blocks, {} heads, context {}; {} quantized weights; cells in {}",
            self.corpus.train.len(),
            self.corpus.test.len(),
            s.lm.d_model,
            s.lm.layers,
            s.lm.heads,
            s.lm.context,
            s.lm.quantized_params(),
            cells.dir().display()
        );
        let test = self.corpus.test_batches::<B::InnerBackend>(
            s.test_windows,
            s.batch,
            s.lm.context,
            &device,
        );
        let mut runner = Runner::<B> {
            study: self,
            test,
            models: run::models(&self.args, &cells),
            pretrained_path: cells.dir().join("pretrained"),
            device,
            pretrained: None,
            full_precision: HashMap::new(),
        };
        run::run_grid(&self.args, &self.grid, &cells, |r| runner.run_cell(r))?;
        run::publish(&self.args, &self.grid, &cells, &self.report()?)
    }
}

impl Study {
    /// The captions of the task's tables.
    fn report(&self) -> Result<Report<'static>> {
        let s = &self.settings;
        let description = format!(
            "A GPT-style decoder (d_model {}, {} pre-norm blocks, {} heads, context {} \
             characters; {} quantized weights: the blocks' linear layers, one MoQ layer per \
             block; embeddings, norms, biases and the head stay f32) pretrained in full precision \
             for {} Adam steps (lr {}, batch {}) on the Brown corpus' running text ({} \
             characters; every tenth document, {} characters, held out), then trained on for {} \
             steps (lr {}) by each method at each width; the same seed gives every method the same \
             batches. Quality: bits per character on {} held-out windows, of the model loaded back \
             from its export.",
            s.lm.d_model,
            s.lm.layers,
            s.lm.heads,
            s.lm.context,
            s.lm.quantized_params(),
            s.pretrain_steps,
            s.pretrain_lr,
            s.batch,
            self.corpus.train.len(),
            self.corpus.test.len(),
            s.steps,
            s.lr,
            s.test_windows,
        );
        Ok(Report {
            task: "charlm",
            title: "a character language model",
            metric: "held-out bits per character",
            lower_is_better: true,
            secondary: None,
            description,
            notes: format!(
                "Learning rates of the sweep are multiples of {}. Schedules: {}.",
                s.lr,
                self.schedules()?
            ),
        })
    }
}

impl Study {
    /// How MoQ and MoQ + eigenvalue run at each width of the main table.
    fn schedules(&self) -> Result<String> {
        let setup = run::setup(self.settings.steps);
        let mut notes = Vec::new();
        for w in &self.grid.widths {
            for v in [Variant::Moq, Variant::MoqEigen, Variant::MoqSecondOrder] {
                if let Some(cfg) = variant_config(v, w.bits, setup)? {
                    notes.push(format!(
                        "{} at {}: {}",
                        v.label(),
                        w.label(),
                        schedule_note(&cfg)
                    ));
                }
            }
        }
        Ok(notes.join("; "))
    }
}

/// Runs the cells of one process.
struct Runner<'a, B: AutodiffBackend> {
    study: &'a Study,
    test: Vec<Batch<B::InnerBackend>>,
    device: B::Device,
    models: PathBuf,
    /// The pretrained model, kept (committed) beside the cells of its configuration: every
    /// later run, on any clone, continues from the same model.
    pretrained_path: PathBuf,
    pretrained: Option<CharLm<B>>,
    full_precision: HashMap<u64, CharLm<B>>,
}

type Recorder = NamedMpkFileRecorder<FullPrecisionSettings>;

impl<B> Runner<'_, B>
where
    B: AutodiffBackend,
    B::InnerBackend: MoqBackend,
{
    /// The batch of `step` of a run of `seed` (seed `u64::MAX`: pretraining).
    fn loss(&self, seed: u64) -> impl Fn(&CharLm<B>, u64) -> Tensor<B, 1> + '_ {
        move |model: &CharLm<B>, step: u64| {
            let s = &self.study.settings;
            let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(step));
            let (x, y) =
                self.study
                    .corpus
                    .train_batch(&mut rng, s.batch, s.lm.context, &self.device);
            model.loss(x, y)
        }
    }

    /// The full-precision model every run starts from: trained once, kept beside the cells.
    fn pretrained(&mut self) -> Result<CharLm<B>> {
        if let Some(m) = &self.pretrained {
            return Ok(m.clone());
        }
        let s = self.study.settings.clone();
        // The runs' own models (full precision per seed, exports) go to `models`.
        std::fs::create_dir_all(&self.models)
            .with_context(|| format!("cannot create `{}`", self.models.display()))?;
        let path = &self.pretrained_path;
        B::seed(&self.device, 0);
        let fresh = CharLm::<B>::new(&s.lm, &self.device);
        let model = if path.with_extension("mpk").exists() {
            fresh.load_file(path, &Recorder::new(), &self.device)?
        } else {
            println!(
                "  pretraining in full precision: {} steps",
                s.pretrain_steps
            );
            let run = Run {
                steps: s.pretrain_steps,
                lr: s.pretrain_lr,
                eigenvalues: None,
                evaluate: None,
                export: None,
            };
            let trained = train(fresh, None, |m| m, run, self.loss(u64::MAX))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create `{}`", dir.display()))?;
            }
            trained.model.clone().save_file(path, &Recorder::new())?;
            println!(
                "  pretrained: {:.4} held-out bits per character ({:.0} s)",
                bits_per_char(&trained.model.valid(), &self.test),
                trained.seconds
            );
            trained.model
        };
        self.pretrained = Some(model.clone());
        Ok(model)
    }

    fn run_cell(&mut self, run: &StudyRun) -> Result<Outcome> {
        let s = self.study.settings.clone();
        let start = self.pretrained()?;
        let steps = s.steps * run.budget;
        let Some(width) = run.width else {
            let r = Run {
                steps,
                lr: s.lr * run.lr_factor,
                eigenvalues: None,
                evaluate: None,
                export: None,
            };
            let trained = train(start, None, |m| m, r, self.loss(run.seed))?;
            trained.model.clone().save_file(
                self.models.join(format!("fp-seed{}", run.seed)),
                &Recorder::new(),
            )?;
            self.full_precision.insert(run.seed, trained.model.clone());
            return Ok(Outcome {
                secondary: None,
                quality: bits_per_char(&trained.model.valid(), &self.test),
                bytes: 4 * s.lm.quantized_params() as u64,
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
        let export = self.models.join(format!("{}.safetensors", run.name()));
        if variant == Variant::Ptq {
            let timer = std::time::Instant::now();
            let fp = self.full_precision_of(run.seed)?;
            let optim = customize(Moq::new(cfg)).init(AdamConfig::new().init(), &fp)?;
            let file = optim.export_at_target(&fp)?;
            return self.served(&file, Vec::new(), timer.elapsed().as_secs_f64(), None);
        }
        let (eigenvalues, _) = eigen_provider::<B, _>(
            Some(&cfg),
            || {
                let mut rng = Rng::new(run.seed ^ 0x5eed);
                let probe = self.study.corpus.train_batch::<burn::backend::NdArray>(
                    &mut rng,
                    8,
                    s.lm.context,
                    &Default::default(),
                );
                Probe::new(s.lm, probe)
            },
            run.seed,
        )
        .unzip();
        let eigenvalues = eigenvalues.map(|p| self.study.eigen_cache.wrap::<B, _>(p, run.seed));
        let r = Run {
            steps,
            lr: s.lr * run.lr_factor,
            eigenvalues,
            evaluate: None,
            export: Some(export.clone()),
        };
        let trained = train(start, Some(cfg), customize, r, self.loss(run.seed))?;
        let file = MoqFile::load(&export)?;
        std::fs::remove_file(&export).ok();
        let widths = trained.bits.iter().flatten().copied().collect();
        let fake = bits_per_char(&trained.model.valid(), &self.test);
        self.served(&file, widths, trained.seconds, Some(fake))
    }

    /// The outcome of an export: its bytes and the quality of the model loaded from it (which
    /// must be the fake-quantized model's, `fake`).
    fn served(
        &self,
        file: &MoqFile,
        widths: Vec<u32>,
        seconds: f64,
        fake: Option<f64>,
    ) -> Result<Outcome> {
        let lm = self.study.settings.lm;
        let model = load_dequantized(CharLm::<B::InnerBackend>::new(&lm, &self.device), file)?;
        let quality = bits_per_char(&model, &self.test);
        if let Some(fake) = fake
            && (quality - fake).abs() > 1e-3 * fake
        {
            bail!("the export scores {quality} bits per character, the trained model {fake}");
        }
        let bytes = file
            .quantized
            .iter()
            .map(|e| e.packed.size_bytes() as u64)
            .sum();
        Ok(Outcome {
            secondary: None,
            quality,
            bytes,
            widths,
            seconds,
        })
    }

    /// The full-precision model of `seed` (PTQ rounds it): from this process or from `models`.
    fn full_precision_of(&mut self, seed: u64) -> Result<CharLm<B>> {
        if let Some(m) = self.full_precision.get(&seed) {
            return Ok(m.clone());
        }
        let path = self.models.join(format!("fp-seed{seed}"));
        if !path.with_extension("mpk").exists() {
            bail!(
                "PTQ of seed {seed} needs its full-precision model `{}`: its cell exists but the \
                 model does not; delete `FullPrecision-fp32-x1-lr1-seed{seed}.json` to retrain it",
                path.with_extension("mpk").display()
            );
        }
        let lm = self.study.settings.lm;
        Ok(CharLm::<B>::new(&lm, &self.device).load_file(&path, &Recorder::new(), &self.device)?)
    }
}

//! The digits example's data and model: the UCI handwritten digits (1,797 8×8 images, the
//! copy in `data/digits.csv.gz`), its fixed train/test split, and the MLP (64 → 128 → 128 →
//! 10) built from `MoqLinear` layers; used by the `digits` and `ddp` binaries.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{LinearConfig, Relu};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use moq_burn::MoqLinear;
use moq_burn::moq_hessian::HessianLoss;

use crate::Rng;

/// Pixels an image.
pub const FEATURES: usize = 64;
/// Digit classes.
pub const CLASSES: usize = 10;
/// Rows of the training split (the other 360 are the test split).
pub const TRAIN: usize = 1437;
/// Rows a training step.
pub const BATCH: usize = 32;

/// Digits: images and labels.
pub struct Digits {
    /// Pixels, `FEATURES` a row, scaled to [0, 1].
    pub x: Vec<f32>,
    /// Labels, 0..10.
    pub y: Vec<i64>,
}

impl Digits {
    /// Rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The copy in the examples crate, `data/digits.csv.gz`.
    pub fn default_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz")
    }

    /// Reads a gzipped CSV of 64 pixel values (0..=16) and a label a row.
    pub fn load(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open `{}`", path.display()))?;
        let reader = BufReader::new(flate2::read::GzDecoder::new(file));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (row, line) in reader.lines().enumerate() {
            let line = line
                .with_context(|| format!("`{}`: cannot read line {}", path.display(), row + 1))?;
            let values: Vec<&str> = line.split(',').collect();
            if values.len() != FEATURES + 1 {
                bail!(
                    "`{}` line {}: {} fields, expected {}",
                    path.display(),
                    row + 1,
                    values.len(),
                    FEATURES + 1
                );
            }
            for v in &values[..FEATURES] {
                let pixel: f32 = v
                    .trim()
                    .parse()
                    .with_context(|| format!("`{}` line {}", path.display(), row + 1))?;
                x.push(pixel / 16.0);
            }
            let label: i64 = values[FEATURES]
                .trim()
                .parse()
                .with_context(|| format!("`{}` line {}", path.display(), row + 1))?;
            if !(0..CLASSES as i64).contains(&label) {
                bail!(
                    "`{}` line {}: label {label} outside 0..10",
                    path.display(),
                    row + 1
                );
            }
            y.push(label);
        }
        Ok(Self { x, y })
    }

    /// The fixed split: a permutation seeded with 0, first 1437 rows train, the other 360 test.
    pub fn split(self) -> (Digits, Digits) {
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::new(0).shuffle(&mut order);
        let pick = |rows: &[usize]| Digits {
            x: rows
                .iter()
                .flat_map(|&r| self.x[r * FEATURES..(r + 1) * FEATURES].iter().copied())
                .collect(),
            y: rows.iter().map(|&r| self.y[r]).collect(),
        };
        (pick(&order[..TRAIN]), pick(&order[TRAIN..]))
    }

    /// The rows `rows` as a batch.
    pub fn tensors<B: Backend>(
        &self,
        rows: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
        let x: Vec<f32> = rows
            .iter()
            .flat_map(|&r| self.x[r * FEATURES..(r + 1) * FEATURES].iter().copied())
            .collect();
        let y: Vec<i64> = rows.iter().map(|&r| self.y[r]).collect();
        (
            Tensor::from_data(TensorData::new(x, [rows.len(), FEATURES]), device),
            Tensor::from_data(TensorData::new(y, [rows.len()]), device),
        )
    }
}

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// 64 → 128.
    pub fc1: MoqLinear<B>,
    /// 128 → 128.
    pub fc2: MoqLinear<B>,
    /// 128 → 10.
    pub out: MoqLinear<B>,
    relu: Relu,
}

impl<B: Backend> Mlp<B> {
    /// Initialised as burn's `LinearConfig::init` does.
    pub fn new(device: &B::Device) -> Self {
        Self {
            fc1: MoqLinear::new(&LinearConfig::new(FEATURES, 128), device),
            fc2: MoqLinear::new(&LinearConfig::new(128, 128), device),
            out: MoqLinear::new(&LinearConfig::new(128, CLASSES), device),
            relu: Relu::new(),
        }
    }

    /// Logits of `x` (`[rows, 64]`).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self.relu.forward(self.fc1.forward(x));
        let x = self.relu.forward(self.fc2.forward(x));
        self.out.forward(x)
    }
}

/// The training loss on a fixed probe batch: what the Hessian eigenvalues are taken of.
pub struct Probe {
    /// The probe's pixels.
    pub x: TensorData,
    /// Its labels.
    pub y: TensorData,
}

impl HessianLoss for Probe {
    type Model<B: Backend> = Mlp<B>;

    fn model<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        Mlp::new(device)
    }

    fn loss<B: Backend>(&self, model: &Mlp<B>) -> Tensor<B, 1> {
        let device = model.out.weight.device();
        let x = Tensor::<B, 2>::from_data(self.x.clone(), &device);
        let y = Tensor::<B, 1, Int>::from_data(self.y.clone(), &device);
        CrossEntropyLossConfig::new()
            .init(&device)
            .forward(model.forward(x), y)
    }
}

/// The share of `data` that `forward` classifies right.
pub fn accuracy<B: Backend>(
    forward: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
    data: &Digits,
    device: &B::Device,
) -> f64 {
    let rows: Vec<usize> = (0..data.len()).collect();
    let (x, y) = data.tensors::<B>(&rows, device);
    let predicted = forward(x).argmax(1).squeeze_dim::<1>(1);
    let correct: i64 = predicted.equal(y).int().sum().into_scalar().elem();
    correct as f64 / data.len() as f64
}

/// A batch for burn-train.
#[derive(Clone, Debug)]
pub struct Batch<B: Backend> {
    /// Pixels.
    pub x: Tensor<B, 2>,
    /// Labels.
    pub y: Tensor<B, 1, Int>,
}

#[derive(Clone)]
/// Stacks rows into a [`Batch`].
pub struct Stack;

impl<B: Backend> Batcher<B, (Vec<f32>, i64), Batch<B>> for Stack {
    fn batch(&self, items: Vec<(Vec<f32>, i64)>, device: &B::Device) -> Batch<B> {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|(x, _)| x.iter().copied()).collect();
        let y: Vec<i64> = items.iter().map(|(_, y)| *y).collect();
        Batch {
            x: Tensor::from_data(TensorData::new(x, [n, FEATURES]), device),
            y: Tensor::from_data(TensorData::new(y, [n]), device),
        }
    }
}

/// Logits and cross-entropy of a batch, for burn-train.
pub fn classify<B: Backend>(model: &Mlp<B>, batch: Batch<B>) -> ClassificationOutput<B> {
    let output = model.forward(batch.x);
    let loss = CrossEntropyLossConfig::new()
        .init(&output.device())
        .forward(output.clone(), batch.y.clone());
    ClassificationOutput {
        loss,
        output,
        targets: batch.y,
    }
}

impl<B: AutodiffBackend> TrainStep for Mlp<B> {
    type Input = Batch<B>;
    type Output = ClassificationOutput<B>;
    fn step(&self, batch: Batch<B>) -> TrainOutput<ClassificationOutput<B>> {
        let item = classify(self, batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl<B: Backend> InferenceStep for Mlp<B> {
    type Input = Batch<B>;
    type Output = ClassificationOutput<B>;
    fn step(&self, batch: Batch<B>) -> ClassificationOutput<B> {
        classify(self, batch)
    }
}

impl Digits {
    /// Every row, for burn's data loaders.
    pub fn items(&self) -> InMemDataset<(Vec<f32>, i64)> {
        InMemDataset::new(
            (0..self.len())
                .map(|r| (self.x[r * FEATURES..(r + 1) * FEATURES].to_vec(), self.y[r]))
                .collect(),
        )
    }
}

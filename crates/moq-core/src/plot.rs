//! SVG figures (feature `plot`, with the `plotters` crate's SVG backend: no system libraries):
//! bits per layer over a run, the figure DeepSpeed's MoQ blog used to explain
//! eigenvalue-driven schedules, and training curves. The `moq` command and the examples draw
//! with these.
//!
//! ```
//! use moq_core::plot::{Curve, Staircase, curves_svg, schedule_svg};
//!
//! let layers = [Staircase::new("encoder.0", vec![(12, 0), (11, 100), (10, 300)])];
//! let svg = schedule_svg("MoQ", 1000, &layers).unwrap();
//! assert!(svg.starts_with("<svg") && svg.contains("encoder.0"));
//!
//! let loss = [Curve::new("MoQ", vec![(0.0, 2.3), (500.0, 0.4), (1000.0, 0.2)])];
//! let svg = curves_svg("training loss", "step", "loss", &loss).unwrap();
//! assert!(svg.contains("training loss"));
//! ```

use plotters::prelude::*;

use crate::error::{MoqError, Result};
use crate::plan::Plan;

/// One layer's schedule: `(bits, step from which it holds)`, in step order.
#[derive(Clone, Debug, PartialEq)]
pub struct Staircase {
    /// Legend label.
    pub label: String,
    /// `(bits, first step at that width)`.
    pub reached: Vec<(u32, u64)>,
}

impl Staircase {
    /// A labelled staircase.
    pub fn new(label: impl Into<String>, reached: Vec<(u32, u64)>) -> Self {
        Self {
            label: label.into(),
            reached,
        }
    }

    /// One staircase per layer of a plan, labelled with the layer and its eigenvalue.
    pub fn from_plan(plan: &Plan) -> Vec<Self> {
        plan.layers
            .iter()
            .map(|l| {
                let label = match l.eigenvalue {
                    Some(e) => format!("layer {} (e = {e})", l.layer),
                    None => format!("layer {}", l.layer),
                };
                Self::new(label, l.reached.clone())
            })
            .collect()
    }
}

/// A curve: a label and `(x, y)` points.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    /// A labelled curve.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.into(),
            points,
        }
    }
}

fn plot_error(e: impl std::fmt::Display) -> MoqError {
    MoqError::Plot {
        reason: e.to_string(),
    }
}

/// Bits per layer over `steps` optimizer steps, one staircase per layer. Layers are spread by
/// up to ±0.15 bit so that layers on the same schedule stay visible.
pub fn schedule_svg(title: &str, steps: u64, layers: &[Staircase]) -> Result<String> {
    let all_bits = || layers.iter().flat_map(|l| l.reached.iter().map(|r| r.0));
    let max_bits = all_bits().max().unwrap_or(16);
    let min_bits = all_bits().min().unwrap_or(1);
    let end = steps.max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0u64..end, (min_bits as f64 - 0.5)..(max_bits as f64 + 0.5))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc("bits")
            .y_labels((max_bits - min_bits + 1) as usize)
            .y_label_formatter(&|b| format!("{b:.0}"))
            .draw()
            .map_err(plot_error)?;
        let n = layers.len() as f64;
        for (i, layer) in layers.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let lift = if n > 1.0 {
                (i as f64 / (n - 1.0) - 0.5) * 0.3
            } else {
                0.0
            };
            // Each width holds until the next drop (or the end of the run).
            let mut points = Vec::new();
            for (k, &(bits, step)) in layer.reached.iter().enumerate() {
                let next = layer.reached.get(k + 1).map_or(end, |&(_, s)| s);
                points.push((step, bits as f64 + lift));
                points.push((next, bits as f64 + lift));
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(layer.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Curves over a shared x axis (training loss or accuracy over steps, say).
pub fn curves_svg(title: &str, x_label: &str, y_label: &str, curves: &[Curve]) -> Result<String> {
    let points = || {
        curves
            .iter()
            .flat_map(|c| c.points.iter())
            .filter(|p| p.1.is_finite())
    };
    let (x0, x1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 {
        return Err(plot_error(format!("`{title}`: no finite points to plot")));
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(plot_error)?;
        // Keep the legend off the curves' ends: rising curves end top right.
        let ends: Vec<f64> = curves
            .iter()
            .filter_map(|c| c.points.iter().rev().find(|p| p.1.is_finite()).map(|p| p.1))
            .collect();
        let end_mean = ends.iter().sum::<f64>() / ends.len().max(1) as f64;
        let legend = if end_mean > (y0 + y1) / 2.0 {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        };
        for (i, curve) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points = curve.points.iter().copied().filter(|p| p.1.is_finite());
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error)?
                .label(curve.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

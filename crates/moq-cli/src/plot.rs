//! `moq schedule --plot FILE.svg`: bits per layer over the run, one staircase per layer (the
//! figure DeepSpeed's MoQ blog used to explain eigenvalue-driven schedules). Layers are spread
//! by up to ±0.15 bit so that layers on the same schedule stay visible.

use anyhow::{Context, Result, anyhow};
use moq_core::Plan;
use plotters::prelude::*;

/// Renders the plan as an SVG document.
pub fn schedule_svg(plan: &Plan, title: &str) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let max_bits = plan
            .layers
            .iter()
            .map(|l| l.spec.start_bits)
            .max()
            .unwrap_or(16);
        let min_bits = plan
            .layers
            .iter()
            .map(|l| l.spec.target_bits)
            .min()
            .unwrap_or(1);
        let end = plan.steps.max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0u64..end, (min_bits as f64 - 0.5)..(max_bits as f64 + 0.5))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("optimizer step")
            .y_desc("bits")
            .y_labels((max_bits - min_bits + 1) as usize)
            .y_label_formatter(&|b| format!("{b:.0}"))
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let layers = plan.layers.len() as f64;
        for layer in &plan.layers {
            let color = Palette99::pick(layer.layer).to_rgba();
            // Layers on the same schedule would hide each other: spread them by up to ±0.15 bit.
            let lift = if layers > 1.0 {
                (layer.layer as f64 / (layers - 1.0) - 0.5) * 0.3
            } else {
                0.0
            };
            // Staircase: each width holds until the next drop (or the end of the run).
            let mut points = Vec::new();
            for (k, &(bits, step)) in layer.reached.iter().enumerate() {
                let next = layer.reached.get(k + 1).map_or(end, |&(_, s)| s);
                points.push((step, bits as f64 + lift));
                points.push((next, bits as f64 + lift));
            }
            let label = match layer.eigenvalue {
                Some(e) => format!("layer {} (e = {e})", layer.layer),
                None => format!("layer {}", layer.layer),
            };
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(label)
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
            .map_err(|e| anyhow!("{e}"))?;
        root.present().context("cannot render the plot")?;
    }
    Ok(svg)
}

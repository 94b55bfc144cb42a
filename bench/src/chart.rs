//! The results as a chart: one bar per target, its height the measured
//! ratio, a black line at the target; green where the target is met.

use std::path::Path;

use plotters::prelude::*;

/// One bar: a label, the measured ratio and the target ratio.
pub struct Bar {
    pub label: String,
    pub ratio: f64,
    pub target: f64,
}

pub fn draw(path: &Path, bars: &[Bar]) -> anyhow::Result<()> {
    // Room for each bar's label under it.
    let width = u32::try_from(bars.len())
        .unwrap_or(u32::MAX)
        .saturating_mul(96)
        .max(1100);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = bars
        .iter()
        .map(|bar| bar.ratio.max(bar.target))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Accountable against its limits: measured ratio (bar), target (line)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        // A segmented 0..n holds n + 1 segments: one per bar is 0..n - 1.
        .build_cartesian_2d((0..bars.len().saturating_sub(1)).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len())
        .x_label_style(("sans-serif", 11))
        .x_label_formatter(&|value| match value {
            SegmentValue::CenterOf(i) => bars.get(*i).map_or_else(String::new, |b| b.label.clone()),
            _ => String::new(),
        })
        .y_desc("ratio")
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, bar)| {
        let colour = if bar.ratio >= bar.target { GREEN } else { RED };
        let mut rectangle = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), bar.ratio),
            ],
            colour.mix(0.6).filled(),
        );
        rectangle.set_margin(0, 0, 12, 12);
        rectangle
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, bar)| {
        PathElement::new(
            vec![
                (SegmentValue::Exact(i), bar.target),
                (SegmentValue::Exact(i + 1), bar.target),
            ],
            BLACK.stroke_width(3),
        )
    }))?;
    root.present()?;
    Ok(())
}

//! Distance histograms (as in the seed document): the honest pair against
//! another pair, over log10(distance2), with the chain's and the recommended
//! thresholds marked; and the per-miner test's statistic against artifacts
//! seen, honest and laundering miners, with its threshold.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::register_font;

/// Below this, `distance2` values are drawn at the floor (0 can occur when
/// logged and recomputed values agree exactly).
const FLOOR: f64 = 1e-6;
const BINS: usize = 60;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// The bitmap backend draws text with a font we ship, so plots look the same
/// on machines without system fonts.
pub fn register_bundled_font() {
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
}

pub struct Series<'a> {
    pub label: &'a str,
    pub values: &'a [f64],
    pub color: RGBColor,
}

pub struct Marker<'a> {
    pub label: &'a str,
    pub value: f64,
    pub color: RGBColor,
}

pub fn histogram(path: &Path, title: &str, series: &[Series<'_>], markers: &[Marker<'_>]) -> anyhow::Result<()> {
    let log = |v: f64| v.max(FLOOR).log10();
    let all = series.iter().flat_map(|s| s.values.iter().copied()).chain(markers.iter().map(|m| m.value));
    let (low, high) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(log(v)), hi.max(log(v))));
    let (low, high) = if low < high { (low.floor(), high.ceil() + 0.2) } else { (low - 1.0, low + 1.0) };
    let width = (high - low) / BINS as f64;
    let counts: Vec<Vec<usize>> = series
        .iter()
        .map(|s| {
            let mut bins = vec![0; BINS];
            for &v in s.values {
                bins[(((log(v) - low) / width) as usize).min(BINS - 1)] += 1;
            }
            bins
        })
        .collect();
    let tallest = counts.iter().flatten().copied().max().unwrap_or(1).max(1);

    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<_>| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(low..high, 0usize..tallest + tallest / 10 + 1)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .x_desc("log10(distance2)")
        .y_desc("artifacts")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw)?;
    for (s, bins) in series.iter().zip(&counts) {
        let color = s.color;
        chart
            .draw_series(bins.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| {
                let x = low + i as f64 * width;
                Rectangle::new([(x, 0), (x + width, c)], color.mix(0.5).filled())
            }))
            .map_err(draw)?
            .label(format!("{} (n = {})", s.label, s.values.len()))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.mix(0.5).filled()));
    }
    for m in markers {
        let color = m.color;
        let x = log(m.value);
        chart
            .draw_series(LineSeries::new([(x, 0), (x, tallest + tallest / 10)], color.stroke_width(2)))
            .map_err(draw)?
            .label(format!("{} {:.2e}", m.label, m.value))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

/// A family of curves drawn in one colour, labelled once.
pub struct Curves<'a> {
    pub label: &'a str,
    pub curves: &'a [Vec<f64>],
    pub color: RGBColor,
}

/// Curves of a statistic against the artifacts seen (x = 1, 2, …), with a
/// horizontal threshold.
pub fn curves(path: &Path, title: &str, families: &[Curves<'_>], threshold: Marker<'_>) -> anyhow::Result<()> {
    let longest = families.iter().flat_map(|f| f.curves.iter().map(Vec::len)).max().unwrap_or(1).max(1);
    let tallest = families.iter().flat_map(|f| f.curves.iter().flatten()).copied().fold(threshold.value, f64::max);
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    let draw = |e: DrawingAreaErrorKind<_>| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(draw)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..longest as f64 + 1.0, 0f64..tallest * 1.1)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .x_desc("artifacts of the miner seen")
        .y_desc("CUSUM statistic")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(draw)?;
    for family in families {
        let color = family.color;
        for (i, curve) in family.curves.iter().enumerate() {
            let points = curve.iter().enumerate().map(|(x, &y)| ((x + 1) as f64, y));
            let series = chart.draw_series(LineSeries::new(points, color.mix(0.7).stroke_width(2))).map_err(draw)?;
            if i == 0 {
                series
                    .label(format!("{} ({} shown)", family.label, family.curves.len()))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], color.stroke_width(2)));
            }
        }
    }
    let color = threshold.color;
    chart
        .draw_series(LineSeries::new(
            [(0.0, threshold.value), (longest as f64 + 1.0, threshold.value)],
            color.stroke_width(2),
        ))
        .map_err(draw)?
        .label(format!("{} {:.2}", threshold.label, threshold.value))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], color.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}
